"""Router unit tests on the real embedding model, and the text rules (routing.signals) without it."""
from __future__ import annotations

import pytest

from routing import evaluate, language, signals
from routing.embedder import routing_embedder
from routing.intents import RouteTable, load_route_table, parse_route_table, routes_path
from routing.live import load_router
from routing.params import params_path
from routing.router import (CODE_TASK, DEPTH_REQUEST, SHORT_FALLBACK, SHORT_FOREIGN, UNCLASSIFIED, Router,
                            decision_without_embedding, forced_decision, text_rule)


@pytest.fixture(scope="module")
def embedder():
    return routing_embedder()


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
    router = Router(_single_table(threshold=0.99), embedder.encode, rules=False)  # the embedding's decision alone
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


# --- issue 17: prompts written by others (docs/routing.md, "Out-of-distribution prompts") ----------------

FUNCTION_TO_COMPLETE = '''Complete this Python function:
def running_max(values: list[int]) -> list[int]:
    """Return the running maximum of the list.
    >>> running_max([1, 3, 2, 5])
    [1, 3, 3, 5]
    """'''


@pytest.mark.parametrize("prompt", [
    FUNCTION_TO_COMPLETE,
    "def median(xs):\n    \"\"\"Median of a non-empty list of numbers.\"\"\"\n",
    "def parse_duration(text: str) -> int:\n    pass",
    "def slugify(title,\n            max_len=60):",  # the signature ends the prompt: the body is asked for
    "public static int gcd(int a, int b) {\n    // TODO\n}",
    "Write a Python function that returns the n-th Fibonacci number using memoization.",
    "can you implement a class for an LRU cache with get and put in O(1)?",
    "write me a bash script to rename every .jpeg file in a folder to .jpg",
    "escribe una función en python que invierta una cadena",
    "二分探索の関数を書いてください",
])
def test_code_tasks_are_recognised(prompt):
    assert signals.code_task(prompt)
    assert text_rule(prompt, language.detect_lang(prompt), "small", "matched") == ("large", CODE_TASK)


@pytest.mark.parametrize("prompt", [
    "how do i reverse a list in python",
    "python one-liner to flatten a list of lists",
    "what does the yield keyword do in python",
    "regex for email?",
    "write a sql query to count rows in a table",
    "how do i write a function in javascript?",
    "what does def mean in python",
    "i def need a coffee",
    "write a python function in one line to sum a list",
    "thanks, the function you wrote works!",
])
def test_questions_about_code_are_not_code_tasks(prompt):
    assert not signals.code_task(prompt)
    assert text_rule(prompt, "en", "small", "matched") is None


@pytest.mark.parametrize("prompt,depth", [
    ("solve 2x + 3 = 11 step by step", True),
    ("explain in detail how a hash map resizes", True),
    ("what are the trade-offs of microservices?", True),
    ("derive the formula for the sum of a geometric series", True),
    ("explique étape par étape comment faire une mayonnaise", True),
    ("詳しく説明してください", True),
    ("prove it", False),
    ("thanks for the detailed answer", False),
    ("what's the capital of peru", False),
])
def test_explicit_requests_for_depth(prompt, depth):
    assert signals.depth_request(prompt) is depth
    assert text_rule(prompt, "en", "small", "matched") == (("large", DEPTH_REQUEST) if depth else None)


@pytest.mark.parametrize("prompt,lang", [
    ("سلام، حالت چطوره؟", "fa"),
    ("안녕하세요^^ 오늘 뭐 했어요?", "ko"),
    ("お元気ですか？", "ja"),
    ("Merhaba, nasılsın?", "tr"),
    ("Как прошли выходные?", "ru"),
    ("hola, ¿qué tal?", "es"),
])
def test_short_foreign_chat_below_every_threshold_goes_small(prompt, lang):
    assert language.detect_lang(prompt) == lang
    assert text_rule(prompt, lang, "large", "fallback") == ("small", SHORT_FOREIGN)


def test_a_script_the_model_cannot_read_goes_small_even_when_a_large_intent_matched():
    assert text_rule("안녕하세요, 반가워요", "ko", "large", "matched") == ("small", SHORT_FOREIGN)
    assert text_rule("hallo, wie geht's?", "de", "large", "matched") is None  # Latin script: the model reads some


@pytest.mark.parametrize("prompt,lang", [
    ("escribe un poema sobre el mar", "es"),  # asks for writing
    ("erkläre mir, wie ein Motor funktioniert", "de"),  # asks for an explanation
    ("resuelve x^2 - 4 = 0", "es"),  # math
    ("我的 python 程序报错了", "zh"),  # code words
    ("напиши рассказ про кота", "ru"),
    ("請詳細解釋量子力學", "zh"),
    ("mein python-skript verbraucht nach ein paar stunden 20 gb ram, wie finde ich das speicherleck?", "de"),  # long
])
def test_foreign_prompts_that_ask_for_work_keep_the_embeddings_decision(prompt, lang):
    assert text_rule(prompt, lang, "large", "fallback") is None


def test_short_english_chat_falls_back_to_small_only_when_a_small_intent_was_closest():
    assert text_rule("meh, whatever you say", "en", "large", "fallback", "small") == ("small", SHORT_FALLBACK)
    assert text_rule("meh, whatever you say", "en", "large", "fallback", "large") is None
    assert text_rule("meh, whatever you say", "en", "large", "matched", "large") is None
    assert text_rule("why is the sky blue", "en", "large", "fallback", "small") is None  # an explanation
    assert text_rule("my build fails with an error", "en", "large", "fallback", "small") is None


def test_rules_never_route_to_small_intents_that_are_switched_off():
    """A threshold above 1 can never pass: operators use it to send everything to large."""
    assert text_rule("meh, whatever you say", "en", "large", "fallback", "small", best_enabled=False) is None
    assert text_rule("سلام", "fa", "large", "fallback", small_enabled=False) is None


def test_word_counts_and_scripts():
    assert signals.profile("hello there, friend") == (3, 1.0)
    words, latin = signals.profile("你好，你叫什么名字？")
    assert 4 <= words <= 7 and latin == 0.0
    assert signals.profile("")[0] == 0
    assert not signals.code_or_math("^^ =) 10-15 minutes, 50% off, $5")
    assert signals.code_or_math("x^2 + 1") and signals.code_or_math("use `git rebase`")


def test_evaluate_uses_the_routers_language_detector():
    assert evaluate.detect_lang is language.detect_lang


@pytest.fixture(scope="module")
def shipped_router(embedder):
    """The router the workers run: bundled routes and fitted parameters."""
    return load_router(routes_path(), params_path(), embedder.encode)


@pytest.mark.parametrize("prompt,lang", [("سلام، خوبی؟", "fa"), ("반가워요!", "ko"), ("Merhaba, nasılsın?", "tr"),
                                         ("hello, how are you doing?", "en")])
def test_greetings_in_any_language_route_small_and_carry_their_language(shipped_router, prompt, lang):
    decision, _ = shipped_router.route(prompt)
    assert (decision.tier, decision.language) == ("small", lang)
    assert decision.as_dict()["language"] == lang


def test_a_function_to_complete_routes_large(shipped_router):
    decision, _ = shipped_router.route(FUNCTION_TO_COMPLETE)
    assert decision.tier == "large" and decision.language == "en"
    embedding_only = Router(shipped_router.table, shipped_router.encode, scoring=shipped_router.scoring,
                            classifier=shipped_router.classifier, rules=False)
    if embedding_only.route(FUNCTION_TO_COMPLETE)[0].tier == "small":  # what issue 17 was about
        assert decision.rule == CODE_TASK and decision.intent == embedding_only.route(FUNCTION_TO_COMPLETE)[0].intent


def test_forced_tiers_are_not_overridden_and_carry_the_language(shipped_router):
    decision, _ = shipped_router.route(FUNCTION_TO_COMPLETE, forced_tier="small")
    assert (decision.tier, decision.rule, decision.language) == ("small", "forced", "en")
    assert forced_decision("large", "bonjour, ça va ?").language == "fr"
    assert decision_without_embedding({"prompt": "hola, ¿qué tal?", "tier": "small", "cache": False},
                                      semantic_cache_entries=100).language == "es"
