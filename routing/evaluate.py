"""How well the router does on labelled prompts: `python -m routing.evaluate --data FILE [--data FILE2 ...] [--json]`.

Routes every prompt one at a time, as the routing worker does, with the configured
routes and parameters files (or the ones named), and prints, for each data file
separately, accuracy, precision and recall per tier, the confusion matrix, the share
routed to small, latency p50/p99, the worst misroutes and a per-language breakdown
(n, accuracy, small share, p50 per language: a row's `lang`, else `detect_lang`).
Several files are routed by one router and summed up in one table at the end.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
import unicodedata
from collections import defaultdict
from typing import Optional, Sequence

import numpy as np

from routing.intents import TIERS
from routing.labelled import load_labelled
from routing.live import configured_files
from routing.router import Router, RoutingDecision
from settings import get_settings

WORST = 10

# --- language of a prompt -------------------------------------------------------------------------
# A cheap, dependency-free guess (no language-ID package is a dependency): the Unicode script of the
# letters decides for non-Latin scripts; Latin-script text is scored on diacritics and a few dozen
# frequent words of each of the commonest Latin-script languages, and is English when nothing points elsewhere.
# Good enough to group an evaluation by language; not a general language identifier.

# Unicode script (first word of a letter's character name) -> ISO 639-1, where one language dominates.
_SCRIPT_LANG = {
    "HANGUL": "ko", "CJK": "zh", "HIRAGANA": "ja", "KATAKANA": "ja", "HEBREW": "he", "BENGALI": "bn",
    "TAMIL": "ta", "TELUGU": "te", "ORIYA": "or", "THAI": "th", "GREEK": "el", "GUJARATI": "gu",
    "GURMUKHI": "pa", "KANNADA": "kn", "MALAYALAM": "ml", "GEORGIAN": "ka", "ARMENIAN": "hy", "SINHALA": "si",
    "KHMER": "km", "LAO": "lo", "MYANMAR": "my", "ETHIOPIC": "am", "TIBETAN": "bo",
    "CYRILLIC": "ru", "ARABIC": "ar", "DEVANAGARI": "hi",
}
_UKRAINIAN_LETTERS = set("іїєґІЇЄҐ")
_URDU_LETTERS = set("ٹڈڑںےۓھ")
_PERSIAN_LETTERS = set("پچژگکی")
_MARATHI_WORDS = {"आहे", "आहेत", "आहेस", "तुम्ही", "तुम्हाला", "मला", "माझे", "माझा", "नाही", "काय", "आपण", "आपल्याला",
                  "कसे", "तुला", "मी", "कोणते", "किती", "झाला"}
_UKRAINIAN_WORDS = {"ти", "як", "що", "хто", "це", "мене", "коли", "де", "чи", "та", "й", "але", "було", "вже", "мені"}
_RUSSIAN_LETTERS = set("ыэъёЫЭЪЁ")
_ARABIC_LETTERS = set("ةيكى")  # Arabic forms where Persian and Urdu write ی and ک
_PERSIAN_WORDS = {"به", "با", "من", "از", "را", "این", "است", "که", "هست", "تو", "چی", "خوبی", "باش", "برم", "بده"}
_PUNCTUATION = "?!.,;:।॥\"'()[]{}«»“”¿¡؟،"

_LATIN_WORD_LISTS = {
    "en": "the is are was you your what how why who where when and of to it this that my do does can with for "
          "have has please thanks thank hello hi hey a an in on be not will would should i am there about as "
          "through from by or if so all just get make write explain give tell show walk derive describe list "
          "create help find fix calculate compare summarize",
    "es": "el la los las que qué es por para con una cómo cuál está estás hola gracias muy pero y del al "
          "mi tu sí bien eres tienes soy también dónde quién buenos días hay esto eso puedes te yo tú usted",
    "fr": "le les des est et je vous pas une pour qui dans sur avec ce ça c j qu bonjour merci oui suis "
          "mon comment pourquoi quel quelle êtes très aussi où au aux du tu es moi toi salut",
    "de": "der die das und ist ich du nicht ein eine zu mit wie was bist sind hallo danke ja nein auf für mir "
          "mich dich wir sie guten tag heute kannst bitte warum wer wo mein dein bin hast",
    "pt": "o os as um uma é não você voce eu do da dos das em na com para olá ola oi obrigado obrigada tudo "
          "bem sim muito qual quantos meu minha faz faça está estou isso isto seu sua",
    "it": "il lo gli della di che è sono sei non una per con come ciao grazie cosa perché perche questo "
          "quello mi ti ho hai ha molto bene buongiorno anche ma io dove chi nel sul alla così dimmi scrivi",
    "nl": "de het een en ik je jij niet van wat hoe dat zijn ben heb hebt op met voor goed hallo dank bedankt "
          "graag wel ook maar er naar kun kan jou mij waarom wie",
    "sv": "och är jag du inte det att en ett som på för med hej tack vad hur vem varför bra mycket har kan "
          "min din mig dig",
    "tr": "bir ve bu ne nasıl merhaba evet hayır teşekkür ederim ben sen mı mi mu mü musun misin var yok çok "
          "iyi için sana beni seni nerede kim neden",
    "id": "saya anda apa ini itu yang dan di ke dari tidak bisa kamu aku selamat pagi terima kasih ada dengan "
          "untuk bagaimana siapa kenapa mengapa halo apakah sudah belum juga tahu",
    "hi": "kya hai kaise tum aap aapka hoon namaste nahi raha rahe hain mein bhi kuch acha accha theek thik kyun kaun "
          "mujhe tumhe yaar bahut karo",  # romanized Hindi (Hinglish)
    "yo": "bawo ni wo lo kini nibo awon ati fun kaabo se",
    "pl": "jest nie się że to co jak czy mnie mi ty ja dla na tak dzień dobry dziękuję cześć proszę",
}
LATIN_WORDS: dict[str, set[str]] = {lang: set(words.split()) for lang, words in _LATIN_WORD_LISTS.items()}
# Letters that point at one language (or two) strongly.
_LATIN_LETTERS = {
    "es": "ñ¿¡", "pt": "ãõâêôç", "de": "ß", "sv": "å", "tr": "ğşı", "pl": "łąęśźżćń",
    "fr": "œëîû", "yo": "ẹọṣńǹ", "vi": "ơưđạảấầẩẫậắằẳẵặẹẻẽếềểễệỉịọỏốồổỗộớờởỡợụủứừửữựỳỵỷỹ",
}
_WORD = re.compile(r"[^\W\d_]+")


def detect_lang(text: str) -> str:
    """The ISO 639-1 code of the prompt's language, guessed cheaply: the Unicode script for non-Latin
    scripts (kana -> ja before Han -> zh; Cyrillic ru/uk, Arabic ar/fa/ur, Devanagari hi/mr by a few
    telltale letters or words), common words and diacritics for Latin script, and "en" when there is no
    evidence (ASCII text with no foreign function words, code, numbers)."""
    counts: dict[str, int] = defaultdict(int)
    letters = 0
    for ch in text:
        if ch.isalpha():
            letters += 1
            if ch.isascii():
                counts["LATIN"] += 1
            else:
                name = unicodedata.name(ch, "")
                counts[name.split(" ", 1)[0] if name else "?"] += 1
    if not letters:
        return "en"
    if counts["HIRAGANA"] + counts["KATAKANA"]:
        return "ja"
    script, n = max(((s, c) for s, c in counts.items() if s in _SCRIPT_LANG), key=lambda sc: sc[1],
                    default=("LATIN", 0))
    if n and n >= 0.2 * letters:
        chars = set(text)
        words = {word.strip(_PUNCTUATION) for word in text.casefold().split()}
        if script == "CYRILLIC":
            if chars & _UKRAINIAN_LETTERS:
                return "uk"
            return "ru" if chars & _RUSSIAN_LETTERS or not words & _UKRAINIAN_WORDS else "uk"
        if script == "ARABIC":
            if chars & _URDU_LETTERS:
                return "ur"
            if chars & _ARABIC_LETTERS:
                return "ar"
            return "fa" if chars & _PERSIAN_LETTERS or words & _PERSIAN_WORDS else "ar"
        if script == "DEVANAGARI":
            return "mr" if words & _MARATHI_WORDS else "hi"
        return _SCRIPT_LANG[script]
    return _latin_lang(text)


def _latin_lang(text: str) -> str:
    lowered = text.casefold()
    words = set(_WORD.findall(lowered))
    scores = {lang: len(words & vocab) for lang, vocab in LATIN_WORDS.items()}
    for lang, marks in _LATIN_LETTERS.items():
        hits = sum(lowered.count(mark) for mark in marks)
        if hits:
            scores[lang] = scores.get(lang, 0) + 1 + min(hits, 3)
    best = max(scores, key=lambda lang: (scores[lang], lang == "en"))
    return best if scores[best] > 0 else "en"


def route_each(router: Router, prompts: Sequence[str]) -> tuple[list[RoutingDecision], list[float], list[float]]:
    """Decisions, wall-clock ms and this thread's CPU ms for each prompt, routed one by one."""
    router.encode(["warm up"])  # the model loads on first use; keep that out of the latencies
    decisions, wall_ms, cpu_ms = [], [], []
    for prompt in prompts:
        wall, cpu = time.perf_counter(), time.thread_time()
        decision, _ = router.route(prompt)
        cpu_ms.append((time.thread_time() - cpu) * 1000)
        wall_ms.append((time.perf_counter() - wall) * 1000)
        decisions.append(decision)
    return decisions, wall_ms, cpu_ms


def metrics(rows: list[dict], decisions: list[RoutingDecision], wall_ms: Optional[list[float]] = None,
            cpu_ms: Optional[list[float]] = None, worst: int = WORST) -> dict:
    """The evaluation report for decisions on labelled rows (latency keys only when timings are given)."""
    expected = np.array([row["tier"] for row in rows])
    routed = np.array([decision.tier for decision in decisions])
    report: dict = {"n": len(rows), "accuracy": _share(expected == routed)}
    for tier in TIERS:
        hits = int(((routed == tier) & (expected == tier)).sum())
        report[f"{tier}_precision"] = _ratio(hits, int((routed == tier).sum()))
        report[f"{tier}_recall"] = _ratio(hits, int((expected == tier).sum()))
    report["small_share"] = _share(routed == "small")
    report["confusion"] = {want: {got: int(((expected == want) & (routed == got)).sum()) for got in TIERS}
                           for want in TIERS}
    with_intent = [(row["intent"], d.intent) for row, d in zip(rows, decisions) if row.get("intent")]
    if with_intent:
        report["intent_accuracy"] = _share(np.array([want == got for want, got in with_intent]))
    if wall_ms:
        report["p50_ms"], report["p99_ms"] = (round(float(np.percentile(wall_ms, q)), 2) for q in (50, 99))
    if cpu_ms:
        report["cpu_p50_ms"] = round(float(np.percentile(cpu_ms, 50)), 2)
    report["worst"] = worst_misroutes(rows, decisions, worst)
    return report


def worst_misroutes(rows: list[dict], decisions: list[RoutingDecision], limit: int) -> list[dict]:
    """Misroutes, costly ones (large work sent to small) first, most confident first."""
    wrong = [(row, d) for row, d in zip(rows, decisions) if row["tier"] != d.tier]
    wrong.sort(key=lambda pair: (pair[0]["tier"] != "large", -pair[1].score))
    return [{"prompt": row["prompt"], "expected": row["tier"], "expected_intent": row.get("intent"),
             **d.as_dict()} for row, d in wrong[:limit]]


def format_report(report: dict) -> str:
    """The human-readable form of `metrics`."""
    lines = [f"prompts            {report['n']}",
             f"accuracy           {report['accuracy']:.3f}"]
    if "intent_accuracy" in report:
        lines.append(f"intent accuracy    {report['intent_accuracy']:.3f}")
    for tier in TIERS:
        precision, recall = report[f"{tier}_precision"], report[f"{tier}_recall"]
        lines.append(f"{tier:<6} precision   {_fmt(precision)}   recall {_fmt(recall)}")
    lines.append(f"routed to small    {report['small_share']:.1%}")
    if "p50_ms" in report:
        lines.append(f"latency            p50 {report['p50_ms']:.1f} ms   p99 {report['p99_ms']:.1f} ms"
                     f"   (CPU p50 {report.get('cpu_p50_ms', float('nan')):.1f} ms)")
    lines += ["", "confusion (rows: labelled, columns: routed)", f"{'':8}{'small':>7}{'large':>7}"]
    lines += [f"{want:8}{report['confusion'][want]['small']:>7}{report['confusion'][want]['large']:>7}"
              for want in TIERS]
    lines += ["", f"worst misroutes ({len(report['worst'])})"]
    for miss in report["worst"]:
        top = ", ".join(f"{name} {score:.3f}" for name, score in miss["top"])
        lines.append(f"  {miss['expected']}->{miss['tier']}  {miss['intent']} {miss['score']:.3f} "
                     f"(threshold {miss['threshold']:.3f}, {miss['rule']}; top: {top})")
        lines.append(f"      {miss['prompt'][:150]!r}")
    return "\n".join(lines)


def row_lang(row: dict) -> str:
    """A row's language: its `lang` field, else `detect_lang` of its prompt."""
    return row.get("lang") or detect_lang(row["prompt"])


def row_source(row: dict) -> str:
    """A row's source package (its `source` up to the first ':'), or "-" when it names none."""
    return str(row.get("source") or "-").split(":", 1)[0]


def breakdown(rows: list[dict], decisions: list[RoutingDecision], wall_ms: Optional[list[float]],
              key=row_lang) -> dict:
    """Per group (a language by default): n, tier accuracy, share routed to small, latency p50 when timed.
    Largest groups first."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        groups[key(row)].append(i)
    out = {}
    for name, index in sorted(groups.items(), key=lambda item: (-len(item[1]), item[0])):
        expected = np.array([rows[i]["tier"] for i in index])
        routed = np.array([decisions[i].tier for i in index])
        group = {"n": len(index), "accuracy": _share(expected == routed), "small_share": _share(routed == "small")}
        if wall_ms:
            group["p50_ms"] = round(float(np.percentile([wall_ms[i] for i in index], 50)), 2)
        out[name] = group
    return out


def set_report(rows: list[dict], decisions: list[RoutingDecision], wall_ms: Optional[list[float]] = None,
               cpu_ms: Optional[list[float]] = None, worst: int = WORST) -> dict:
    """`metrics` plus the per-language breakdown (`by_lang`) and, when rows name sources, `by_source`."""
    report = metrics(rows, decisions, wall_ms, cpu_ms, worst)
    report["by_lang"] = breakdown(rows, decisions, wall_ms, row_lang)
    if any(row.get("source") for row in rows):
        report["by_source"] = breakdown(rows, decisions, wall_ms, row_source)
    return report


def format_breakdown(report: dict) -> str:
    """The per-language (and per-source) tables of a `set_report`."""
    lines = []
    for title, key in (("by language (a row's lang, else detected)", "by_lang"), ("by source", "by_source")):
        if key not in report:
            continue
        width = max(8, *(len(name) for name in report[key]))
        lines += [title, f"  {'':<{width}} {'n':>5} {'accuracy':>9} {'small':>7} {'p50 ms':>7}"]
        for name, group in report[key].items():
            p50 = f"{group['p50_ms']:>7.1f}" if "p50_ms" in group else f"{'':>7}"
            lines.append(f"  {name:<{width}} {group['n']:>5} {group['accuracy']:>9.3f} "
                         f"{group['small_share']:>7.1%} {p50}")
        lines.append("")
    return "\n".join(lines).rstrip()


def format_summary(reports: list[dict]) -> str:
    """One line per evaluated set."""
    width = max(4, *(len(r["data"]) for r in reports))
    lines = ["summary", f"  {'set':<{width}} {'n':>5} {'accuracy':>9} {'small':>7} {'p50 ms':>7}"]
    for r in reports:
        p50 = f"{r['p50_ms']:>7.1f}" if "p50_ms" in r else f"{'':>7}"
        lines.append(f"  {r['data']:<{width}} {r['n']:>5} {r['accuracy']:>9.3f} {r['small_share']:>7.1%} {p50}")
    return "\n".join(lines)


def _share(mask: np.ndarray) -> float:
    return round(float(mask.mean()), 4) if mask.size else 0.0


def _ratio(hits: int, total: int) -> Optional[float]:
    return round(hits / total, 4) if total else None


def _fmt(value: Optional[float]) -> str:
    return "  n/a" if value is None else f"{value:.3f}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m routing.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, action="append",
                        help="labelled JSON lines: prompt, tier, intent, lang, source (all but the first two "
                             "optional); repeat for several sets, each reported separately")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object instead of text (one set: its report; several: "
                             '{"scoring", "sets": [report, ...]})')
    routes, params = configured_files(get_settings())
    parser.add_argument("--routes", default=str(routes), help="routes file (default: ROUTES_FILE or the bundled one)")
    parser.add_argument("--params", default=str(params),
                        help="parameters file (default: ROUTING_PARAMS_FILE or the bundled one)")
    parser.add_argument("--worst", type=int, default=WORST, help="how many misroutes to list")
    args = parser.parse_args(argv)

    from routing.embedder import Embedder
    from routing.live import load_router

    try:
        sets = [(path, load_labelled(path)) for path in args.data]
        router = load_router(args.routes, args.params, Embedder().encode)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    reports = []
    for path, rows in sets:
        decisions, wall_ms, cpu_ms = route_each(router, [row["prompt"] for row in rows])
        reports.append({"data": str(path), "scoring": router.scoring,
                        **set_report(rows, decisions, wall_ms, cpu_ms, args.worst)})
    if args.json:
        print(json.dumps(reports[0] if len(reports) == 1 else {"scoring": router.scoring, "sets": reports}))
    else:
        print("\n\n".join(f"== {r['data']} ==\n{format_report(r)}\n\n{format_breakdown(r)}" for r in reports))
        if len(reports) > 1:
            print("\n" + format_summary(reports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
