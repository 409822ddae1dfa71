"""Router unit tests on the real embedding model."""
from __future__ import annotations

import pytest

from routing.embedder import Embedder
from routing.intents import RouteTable, load_route_table, parse_route_table
from routing.router import UNCLASSIFIED, Router, decision_without_embedding


@pytest.fixture(scope="module")
def embedder():
    return Embedder()


@pytest.fixture(scope="module")
def router(embedder):
    return Router(load_route_table(), embedder.encode)


def test_embeddings_are_unit_length(embedder):
    vectors = embedder.encode(["hello", "a much longer sentence about databases"])
    assert vectors.shape == (2, 384)
    assert abs(float((vectors[0] ** 2).sum()) - 1) < 1e-4


def test_route_table_file_is_valid():
    table = load_route_table()
    names = {i.name for i in table.intents}
    assert {"casual", "factual", "code_help", "debugging", "deep_explanation", "planning", "creative",
            "step_by_step"} <= names
    assert all(len(i.utterances) >= 10 for i in table.intents)


@pytest.mark.parametrize(
    "prompt,intent,tier",
    [
        ("hello, how are you doing?", "casual", "small"),
        ("what is the boiling point of water at sea level", "factual", "small"),
        ("write a haiku about autumn leaves", "creative", "large"),
        ("my program throws a NullPointerException on line 42, how do I fix it", "debugging", "large"),
    ],
)
def test_clear_prompts_route_to_their_intent(router, prompt, intent, tier):
    decision, embedding = router.route(prompt)
    assert decision.intent == intent
    assert decision.tier == tier
    assert embedding.shape == (384,)
    assert decision.top[0][0] == intent and len(decision.top) == 3
    assert decision.top[0][1] >= decision.top[1][1] >= decision.top[2][1]


def test_forced_tier_keeps_real_intent_and_score(router):
    decision, _ = router.route("hello, how are you doing?", forced_tier="large")
    assert (decision.tier, decision.rule, decision.intent) == ("large", "forced", "casual")
    assert decision.score == decision.top[0][1]


def _single_table(threshold: float, default_tier: str = "large") -> RouteTable:
    return parse_route_table({
        "default_tier": default_tier,
        "intents": [{"name": "greeting", "tier": "small", "threshold": threshold,
                     "utterances": ["hello", "hi there", "good morning"]}],
    })


def test_fallback_reports_best_intent_and_its_real_score(embedder):
    router = Router(_single_table(threshold=0.99), embedder.encode)
    decision, _ = router.route("hi")
    assert decision.rule == "fallback" and decision.tier == "large"
    assert decision.intent == "greeting"
    assert 0 < decision.score < 0.99


def test_highest_passing_intent_wins_over_a_higher_failing_one(embedder):
    table = parse_route_table({
        "default_tier": "small",
        "intents": [
            {"name": "greeting", "tier": "small", "threshold": 0.999, "utterances": ["hello", "hi there"]},
            {"name": "anything", "tier": "large", "threshold": -1.0, "utterances": ["quantum field theory"]},
        ],
    })
    decision, _ = Router(table, embedder.encode).route("hello")
    assert decision.top[0][0] == "greeting"
    assert (decision.intent, decision.rule, decision.tier) == ("anything", "matched", "large")


@pytest.mark.parametrize("scoring", ["centroid", "max", "topk"])
def test_every_scoring_mode_separates_obvious_cases(embedder, scoring):
    router = Router(load_route_table(), embedder.encode, scoring=scoring)
    assert router.route("thanks so much, have a great day!")[0].intent == "casual"


@pytest.mark.parametrize(
    "data,message",
    [
        ({}, "intents"),
        ({"intents": [{"tier": "small", "threshold": 0.5, "utterances": ["x"]}]}, "no name"),
        ({"intents": [{"name": "a", "tier": "medium", "threshold": 0.5, "utterances": ["x"]}]}, "tier"),
        ({"intents": [{"name": "a", "tier": "small", "threshold": 3, "utterances": ["x"]}]}, "threshold"),
        ({"intents": [{"name": "a", "tier": "small", "threshold": 0.5, "utterances": []}]}, "utterances"),
        ({"default_tier": "x", "intents": [{"name": "a", "tier": "small", "threshold": 0.5, "utterances": ["x"]}]},
         "default_tier"),
    ],
)
def test_invalid_route_tables_are_refused_with_a_reason(data, message):
    with pytest.raises(ValueError, match=message):
        parse_route_table(data)


@pytest.mark.parametrize("job, routed", [
    ({"prompt": "hi", "tier": "small", "cache": False}, "small"),  # forced, the cache bypassed
    ({"prompt": "hi", "tier": "large", "messages": [{"role": "user", "content": "hi"}]}, "large"),  # never cached
    ({"prompt": "hi", "tier": "small", "temperature": 0.7}, "small"),  # sampled: never cached
    ({"prompt": "hi", "tier": "small"}, None),  # the cache is looked up: it needs the embedding
    ({"prompt": "hi", "cache": False}, None),  # not forced: the router decides
    ({"prompt": "hi", "tier": "auto", "cache": False}, None),
])
def test_only_a_forced_tier_the_semantic_cache_never_sees_goes_unembedded(job, routed):
    decision = decision_without_embedding(job, semantic_cache_entries=100)
    assert (decision.tier if decision else None) == routed
    if decision:
        assert (decision.rule, decision.intent) == ("forced", UNCLASSIFIED)


def test_with_the_semantic_cache_off_a_forced_tier_needs_no_embedding():
    assert decision_without_embedding({"prompt": "hi", "tier": "small"}, semantic_cache_entries=0).tier == "small"
