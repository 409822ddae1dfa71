"""The semantic cache's defence against false hits: the guard alone, and on the real embedding model and Redis.

The near-miss sets (tests/fixtures/cache_near_misses.jsonl and cache_pairs/near_misses.jsonl)
hold pairs that embed close together but ask different things; none may hit. The paraphrase
sets hold pairs that ask the same; the hit rate is reported and has a floor. The pairs under
cache_pairs/ are split into `dev` (used to design the guard's rules) and `held-out` (only
measured); test_hit_and_false_hit_rates prints the table of both (docs/operations.md; bench/cache_guard.py).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from cache import guard
from cache.guard import mismatch, signature
from bench.cache_guard import evaluate
from cache.keys import normalise_text
from cache.semantic import SemanticCache
from engines.provider import served_models
from helpers import job_store
from routing.embedder import routing_embedder
from settings import get_settings

FIXTURES = Path(__file__).parent / "fixtures"
TIER = "small"
NEAR_MISS_FILES = ["cache_near_misses.jsonl", "cache_pairs/near_misses.jsonl"]
PARAPHRASE_FILES = ["cache_paraphrases.jsonl", "cache_pairs/paraphrases.jsonl"]
PAIR_SETS = ["cache_pairs/near_misses.jsonl", "cache_pairs/paraphrases.jsonl", "cache_pairs/external_paraphrases.jsonl"]


def load_pairs(name: str) -> list[dict]:
    with open(FIXTURES / name, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


@pytest.fixture(scope="module")
def embedder():
    return routing_embedder()


@pytest.fixture()
def semantic():
    cache = SemanticCache(job_store(), served_models(), prefix="test:semantic-guard")
    cache.index.clear()
    yield cache
    cache.index.clear()


def job_for(prompt: str) -> dict:
    return {"prompt": prompt, "max_tokens": 8, "temperature": 0.0, "tier": "auto"}


def fill(cache: SemanticCache, prompts: list[str], vectors: np.ndarray) -> None:
    for prompt, vector in zip(prompts, vectors):
        result = {"response": f"answer to {prompt}", "model_used": served_models()[TIER], "tier": TIER,
                  "tokens": 8, "finish_reason": "length", "intent": "factual", "score": 0.5,
                  "routing": {"intent": "factual", "tier": TIER, "score": 0.5, "rule": "matched"}}
        cache.add(job_for(prompt), result, vector)


def hits(cache: SemanticCache, prompts: list[str], vectors: np.ndarray) -> list:
    """For each prompt, the cached prompt it hit, or None."""
    found = []
    for prompt, vector in zip(prompts, vectors):
        hit, _ = cache.lookup(job_for(prompt), TIER, vector)
        found.append(hit[0]["prompt"] if hit else None)
    return found


def all_pairs(*names: str) -> list[dict]:
    return [pair for name in names for pair in load_pairs(name)]


@pytest.mark.parametrize("name", NEAR_MISS_FILES)
@pytest.mark.parametrize("direction", ["a->b", "b->a"])
def test_no_near_miss_is_a_hit(semantic, embedder, direction, name):
    pairs = load_pairs(name)
    assert len(pairs) >= 60
    stored, asked = ("a", "b") if direction == "a->b" else ("b", "a")
    fill(semantic, [p[stored] for p in pairs], embedder.encode([p[stored] for p in pairs]))
    found = hits(semantic, [p[asked] for p in pairs], embedder.encode([p[asked] for p in pairs]))
    false_hits = [(p[asked], f) for p, f in zip(pairs, found) if f is not None]
    assert false_hits == []


@pytest.mark.parametrize("name", PARAPHRASE_FILES)
def test_paraphrases_hit_their_own_pair(semantic, embedder, artifacts_dir, name):
    pairs = load_pairs(name)
    assert len(pairs) >= 60
    fill(semantic, [p["a"] for p in pairs], embedder.encode([p["a"] for p in pairs]))
    found = hits(semantic, [p["b"] for p in pairs], embedder.encode([p["b"] for p in pairs]))
    wrong = [(p["b"], f) for p, f in zip(pairs, found) if f is not None and f != p["a"]]
    assert wrong == [], "a paraphrase hit another pair's answer"
    hit_rate = sum(f is not None for f in found) / len(pairs)
    beyond_exact = [p for p, f in zip(pairs, found) if f and normalise_text(p["a"]) != normalise_text(p["b"])]
    report = {"pairs": len(pairs), "hits": sum(f is not None for f in found), "hit_rate": round(hit_rate, 3),
              "hits_the_exact_cache_would_miss": len(beyond_exact), "threshold": semantic.threshold}
    artifact = "cache_paraphrase_hit_rate.json" if name == PARAPHRASE_FILES[0] else "cache_pairs_hit_rate.json"
    (artifacts_dir / artifact).write_text(json.dumps(report, indent=2))
    print(f"\nparaphrase hit rate ({name}): {report}")
    # 0.4 under the word-order guard (50 % measured); the guard of issue 17 measured 70 % on both sets.
    assert hit_rate >= 0.6, report


def test_hit_and_false_hit_rates(embedder, artifacts_dir):
    """The table in docs/operations.md: each pair decided as a lookup decides it (cosine at the threshold
    and the guard), per set and split; CACHE_GUARD_BASELINE=<an earlier guard.py> adds its column."""
    baseline = os.environ.get("CACHE_GUARD_BASELINE")
    result = evaluate(embedder.encode, get_settings().semantic_cache_threshold, Path(baseline) if baseline else None)
    (artifacts_dir / "cache_guard_rates.json").write_text(json.dumps(result, indent=1))
    print(f"\nthreshold {result['threshold']}, guard {result['cost_us']} us per check\n{result['markdown']}")
    assert [row for row in result["rows"] if not row["same"] and row["guard"]] == [], "false hits"
    for row in result["rows"]:
        if row["set"] == "paraphrases":
            assert row["guard"] / row["pairs"] >= 0.6, row


@pytest.mark.parametrize(
    "a,b,reason",
    [
        ("is X safe", "is X not safe", "negation"),
        ("convert 5 km to miles", "convert 50 km to miles", "numbers"),
        ("capital of Austria", "capital of Australia", "content"),
    ],
)
def test_the_issue_examples_are_refused_for_the_right_reason(a, b, reason):
    assert mismatch(a, b) == reason
    assert mismatch(b, a) == reason


def test_signature_reads_numbers_negations_and_contractions():
    assert signature("What's twenty five percent of 1,000?").numbers == ("25", "1000")
    assert signature("isn't it safe").negations == 1
    assert signature("Can you tell me how to install numpy?") == signature("how do I install NumPy")


@pytest.mark.parametrize(
    "a,b",
    [
        ("what is the largest ocean on earth", "which ocean is the largest on earth"),  # one neighbour swap
        ("How do refrigerators work?", "how does a refrigerator work"),
    ],
)
def test_rewordings_pass(a, b):
    assert mismatch(a, b) is None


@pytest.mark.parametrize(
    "a,b,reason",
    [
        ("convert celsius to fahrenheit", "convert fahrenheit to celsius", "order"),
        ("hi", "hey", "content"),  # nothing left to compare is no evidence of a match
        ("what is 2 + 3", "what is 2 * 3", "content"),
    ],
)
def test_refusals(a, b, reason):
    assert mismatch(a, b) == reason


# --- The guard alone, on the labelled pairs (no embedder) ------------------------------------------------------------

def test_the_pair_sets_are_labelled_and_split():
    near = load_pairs("cache_pairs/near_misses.jsonl")
    same = load_pairs("cache_pairs/paraphrases.jsonl")
    assert len(near) >= 40 and len(same) >= 30
    for pair in all_pairs(*PAIR_SETS):
        assert {"a", "b", "same", "kind", "source", "split"} <= set(pair), pair
        assert pair["split"] in ("dev", "held-out") and pair["a"] != pair["b"]
    assert not any(p["same"] for p in near) and all(p["same"] for p in same)
    kinds = {"negation", "number", "entity", "direction", "language", "unit", "time", "order"}
    assert kinds <= {p["kind"] for p in near}
    for pairs in (near, same):
        assert {"dev", "held-out"} == {p["split"] for p in pairs}


def test_the_guard_refuses_every_near_miss_both_ways():
    accepted = [(p["a"], p["b"]) for p in all_pairs(*NEAR_MISS_FILES)
                if mismatch(p["a"], p["b"]) is None or mismatch(p["b"], p["a"]) is None]
    assert accepted == []


def test_the_guard_is_symmetric():
    pairs = all_pairs(*NEAR_MISS_FILES, *PARAPHRASE_FILES, "cache_pairs/external_paraphrases.jsonl")
    assert [(p["a"], p["b"]) for p in pairs if mismatch(p["a"], p["b"]) != mismatch(p["b"], p["a"])] == []


@pytest.mark.parametrize("split", ["dev", "held-out"])
def test_the_guard_lets_most_paraphrases_through(split):
    """Guard-level share; the cache also needs the similarity threshold (see bench.cache_guard)."""
    pairs = [p for p in load_pairs("cache_pairs/paraphrases.jsonl") if p["split"] == split]
    refused = [(p["a"], p["b"], mismatch(p["b"], p["a"])) for p in pairs if mismatch(p["b"], p["a"]) is not None]
    assert 1 - len(refused) / len(pairs) >= 0.65, refused


@pytest.mark.parametrize(
    "a,b",
    [
        ("What is the capital of France?", "Which city is the capital of France?"),  # the issue's examples
        ("How do I center a div in CSS?", "How can I center a div with CSS?"),
        ("Is it safe to eat raw eggs?", "are raw eggs safe to eat"),  # reordered around no shared word
        ("Flights to Paris from London", "flights from London to Paris"),
        ("What's the difference between TCP and UDP?", "What is the difference between UDP and TCP?"),
        ("Can you give me a recipe for banana bread?", "I need a banana bread recipe"),
        ("How tall is Mount Everest?", "what is the height of mount everest"),
        ("Who wrote War and Peace?", "Who is the author of War and Peace?"),
        ("How does a bill become a law in the US?", "How does a bill become law in the United States?"),
    ],
)
def test_paraphrases_pass(a, b):
    assert mismatch(a, b) is None
    assert mismatch(b, a) is None


@pytest.mark.parametrize(
    "a,b,reason",
    [
        ("How do I scroll up in tmux?", "How do I scroll down in tmux?", "direction"),
        ("Sort a list in ascending order", "Sort a list in descending order", "direction"),
        ("How to increase the font size", "How to decrease the font size", "direction"),
        ("What should I eat before a workout?", "What should I eat after a workout?", "direction"),
        ("Find the max of an array", "Find the minimum of an array", "direction"),
        ("How do I turn on my VPN?", "How do I turn off my VPN?", "direction"),
        ("Encrypt a file with gpg", "Decrypt a file with gpg", "direction"),
        ("Is it legal to record a call?", "Is it illegal to record a call?", "negation"),
        ("Which country has the largest population?", "Which city has the largest population?", "content"),
        ("Who is the prime minister of Canada?", "Who was the prime minister of Canada?", "tense"),
        ("Who does Alice love?", "Who loves Alice?", "order"),  # the wh-word's role changed
        ("Flights to Paris from London", "Flights from Paris to London", "order"),
        ("how to convert a list of dicts to a dict of lists", "how to convert a dict of lists to a list of dicts",
         "order"),
        ("What is 2 to the power of 10?", "What is 10 to the power of 2?", "numbers"),
        ("What's a good gift for a 10 year old?", "What is a good gift for a twelve-year-old?", "numbers"),
    ],
)
def test_what_must_agree(a, b, reason):
    assert mismatch(a, b) == reason
    assert mismatch(b, a) == reason


def test_a_check_costs_well_under_a_millisecond():
    pairs = all_pairs(*PAIR_SETS)
    started = time.perf_counter()
    for _ in range(5):
        guard.signature.cache_clear()  # every prompt read afresh
        for pair in pairs:
            mismatch(pair["b"], pair["a"])
    per_check = (time.perf_counter() - started) / (5 * len(pairs))
    assert per_check < 0.001, f"{per_check * 1e6:.0f} us per check"


def test_a_long_reordered_prompt_is_refused_in_bounded_time():
    words = [f"term{i}" for i in range(3000)]
    guard.signature.cache_clear()
    started = time.perf_counter()
    assert mismatch(" ".join(words), " ".join(reversed(words))) == "order"
    assert time.perf_counter() - started < 0.5
