"""Escalation: the weakness rule, its settings and the `escalate` request field (fast), and a weak small
answer re-run on the large tier by real workers (slow)."""
from __future__ import annotations

import math

import pytest
from marshmallow import ValidationError

from engines.base import GenerationChunk, GenerationRequest
from settings import Settings, load_settings
from engines.confidence import EscalationRule, answer_stats
from tasks.answer import Answers
from tasks.escalation import arm, armed, parse_intents
from tasks.fallback import escalated
from webapp.openai_format import job_from_chat
from webapp.schemas import JobRequestSchema

ROUTED_SMALL = {"intent": "casual", "tier": "small", "score": 0.8, "threshold": 0.3, "rule": "matched", "top": []}
ON = Settings(escalation=True)


# The rule


def test_stats_read_mean_minimum_and_low_share():
    stats = answer_stats([-0.1, -0.5, -3.0, -0.2], floor=-2.0)
    assert stats.tokens == 4
    assert math.isclose(stats.mean_logprob, -0.95)
    assert stats.min_logprob == -3.0
    assert stats.low_share == 0.25
    assert stats.as_dict() == {"mean_logprob": -0.95, "min_logprob": -3.0, "low_share": 0.25}


def test_an_answer_without_tokens_is_never_weak():
    assert answer_stats([], floor=-2.0) is None
    assert not EscalationRule(mean_logprob=0.0, low_share=0.0).weak(None)


def test_the_neutral_rule_calls_nothing_weak():
    rule = EscalationRule()
    assert not rule.weak(rule.stats([-9999.0, -50.0, -0.0]))


@pytest.mark.parametrize("rule, weak", [
    (EscalationRule(mean_logprob=-1.0), True),  # mean -1.2
    (EscalationRule(mean_logprob=-1.5), False),
    (EscalationRule(min_logprob=-2.5), True),  # min -3.0
    (EscalationRule(min_logprob=-3.5), False),
    (EscalationRule(low_floor=-2.0, low_share=0.2), True),  # 1 of 3 below -2
    (EscalationRule(low_floor=-2.0, low_share=0.5), False),
    (EscalationRule(low_floor=-0.5, low_share=0.5), True),  # 2 of 3 below -0.5
])
def test_any_armed_part_of_the_rule_calls_an_answer_weak(rule, weak):
    assert rule.weak(rule.stats([-0.1, -0.5 - 1e-9, -3.0])) is weak


# Arming


def test_armed_for_a_routed_small_job_only():
    assert armed(ON, {}, ROUTED_SMALL)
    assert not armed(Settings(), {}, ROUTED_SMALL)  # ESCALATION off
    assert not armed(ON, {"escalate": False}, ROUTED_SMALL)  # the request opts out
    assert armed(ON, {"escalate": True}, ROUTED_SMALL)
    assert not armed(ON, {}, {**ROUTED_SMALL, "tier": "large"})
    assert not armed(ON, {}, {**ROUTED_SMALL, "rule": "forced"})  # a caller's forced tier stays
    fell_back = {**ROUTED_SMALL, "fallback": {"from": "large", "to": "small", "reason": "no_live_workers"}}
    assert not armed(ON, {}, fell_back)
    assert not armed(ON, {"n": 2}, ROUTED_SMALL)


def test_armed_per_intent():
    assert parse_intents("") is None and parse_intents("*") is None
    assert parse_intents(" casual, factual ,") == {"casual", "factual"}
    assert armed(ON.replace(escalation_intents="casual,factual"), {}, ROUTED_SMALL)
    assert not armed(ON.replace(escalation_intents="factual"), {}, ROUTED_SMALL)


def test_the_routing_decision_says_whether_escalation_is_armed():
    assert arm(ON, {}, ROUTED_SMALL)["escalate"] is True
    assert arm(ON, {"escalate": False}, ROUTED_SMALL)["escalate"] is False
    assert "escalate" not in arm(Settings(), {}, ROUTED_SMALL)  # off: the decision is as it was


def test_escalation_moves_the_job_as_tier_fallback_does():
    moved = escalated(ROUTED_SMALL, "weak_answer", {"mean_logprob": -2.0, "small_tokens": 5})
    assert moved["tier"] == "large"
    assert moved["fallback"] == {"from": "small", "to": "large", "reason": "weak_answer"}
    assert moved["escalation"] == {"from": "small", "reason": "weak_answer", "mean_logprob": -2.0, "small_tokens": 5}
    assert escalated({**ROUTED_SMALL, "rule": "forced"}, "weak_answer", {}) is None
    assert escalated(moved, "weak_answer", {}) is None  # once only


def test_log_probabilities_the_job_did_not_ask_for_are_kept_not_published():
    answers = Answers(GenerationRequest([], 4, logprobs=0), publish_logprobs=False)
    entry = {"token": "Hi", "logprob": -0.3, "bytes": [72, 105], "top_logprobs": []}
    assert answers.add(GenerationChunk("Hi", token=1, logprob=entry)) == {"text": "Hi"}
    assert answers.add(GenerationChunk("", token=2, finish_reason="stop")) is None
    assert answers.answers[0].logprobs == [entry]
    assert "logprobs" not in answers.result_fields(with_logprobs=False)


def test_the_default_rule_is_the_calibrated_one():
    assert EscalationRule.from_settings(Settings()) == EscalationRule(low_floor=-2.0, low_share=0.0787)


# Settings and the request field


def test_settings_parse_and_validate():
    settings = load_settings({"ESCALATION": "1", "ESCALATION_INTENTS": "casual", "ESCALATION_MEAN_LOGPROB": "-1.5",
                              "ESCALATION_LOW_FLOOR": "-3", "ESCALATION_LOW_SHARE": "0.2"})
    assert settings.escalation and settings.escalation_intents == "casual"
    assert EscalationRule.from_settings(settings) == EscalationRule(-1.5, -9999.0, -3.0, 0.2)
    assert not Settings().escalation  # off unless set
    with pytest.raises(ValueError, match="ESCALATION_LOW_SHARE"):
        load_settings({"ESCALATION_LOW_SHARE": "1.5"})
    with pytest.raises(ValueError, match="ESCALATION_MEAN_LOGPROB"):
        load_settings({"ESCALATION_MEAN_LOGPROB": "0.5"})
    with pytest.raises(ValueError, match="ESCALATION"):
        load_settings({"ESCALATION": "maybe"})


def test_escalate_is_a_strict_boolean_in_the_job_request():
    schema = JobRequestSchema(Settings())
    assert schema.load({"prompt": "hi", "escalate": False})["escalate"] is False
    assert "escalate" not in schema.load({"prompt": "hi", "escalate": True})  # the default: no field
    assert "escalate" not in schema.load({"prompt": "hi"})
    for bad in ("false", 0, None):
        with pytest.raises(ValidationError) as error:
            schema.load({"prompt": "hi", "escalate": bad})
        assert "escalate" in error.value.messages


def test_an_openai_stream_escalates_only_when_it_asks():
    chat = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    assert "escalate" not in job_from_chat(chat, "auto"), "a plain request leaves it to the settings"
    assert job_from_chat({**chat, "stream": True}, "auto")["escalate"] is False, "its text cannot be taken back"
    assert "escalate" not in job_from_chat({**chat, "stream": True, "escalate": True}, "auto")
    assert job_from_chat({**chat, "escalate": False}, "auto")["escalate"] is False


def test_an_escalation_is_counted():
    from monitoring import prometheus

    def count() -> float:
        value = prometheus.recorded().registry.get_sample_value(
            "llm_escalations_total", {"from_tier": "small", "to_tier": "large"})
        return value or 0.0

    before = count()
    prometheus.escalation("small", "large")
    assert count() == before + 1


# Real workers (slow): a routing and a small worker of the test's own with a rule every answer fails.

SMALL_PROMPT = "hey! how's it going today?"  # the router sends it to the small tier
EVERY_ANSWER_WEAK = {"ESCALATION": "1", "ESCALATION_MEAN_LOGPROB": "0"}  # a mean log-probability below 0: always


@pytest.fixture(scope="module")
def escalating_workers(workers, artifacts_dir):
    from helpers import job_store
    from jobs.presence import live_workers
    from settings import get_settings
    from workerctl import node, paused, started_worker, stop_warm, wait_until

    beat, redis = get_settings().worker_heartbeat_s, job_store().redis
    log_dir = artifacts_dir / "logs"
    router = started_worker("routing-esc", log_dir, "routing", EVERY_ANSWER_WEAK, concurrency=2)
    small = started_worker("small-esc", log_dir, "small-queue", EVERY_ANSWER_WEAK, concurrency=2)
    try:
        with paused("routing", "routing"), paused("small", "small-queue"):
            wait_until(lambda: node("small-esc") in live_workers(redis, "small-queue", beat), 60, "small-esc")
            yield
    finally:
        stop_warm(router)
        stop_warm(small)


def _starts(job_id: str) -> list[str]:
    """The tiers of the `start` events in the job's stream."""
    import json

    from helpers import job_store
    from jobs.store import stream_key

    entries = job_store().redis.xrange(stream_key(job_id))
    starts = []
    for _, fields in entries:
        text = lambda value: value.decode() if isinstance(value, bytes) else value  # noqa: E731
        fields = {text(k): text(v) for k, v in fields.items()}
        if fields.get("event") == "start":
            starts.append(json.loads(fields["data"])["tier"])
    return starts


def test_a_weak_small_answer_is_answered_by_large(client, escalating_workers):
    from helpers import job_store, wait_for_job
    from workerctl import submit

    job_id = submit(client, prompt=SMALL_PROMPT, max_tokens=8)
    view = wait_for_job(client, job_id, timeout=300)
    assert view["status"] == "succeeded", view
    result = view["result"]
    assert result["tier"] == "large" and result["queue"] == "large-queue"
    assert result["escalated"] is True
    assert result["fallback"] == {"from": "small", "to": "large", "reason": "weak_answer"}
    escalation = result["escalation"]
    assert escalation["from"] == "small" and escalation["reason"] == "weak_answer"
    assert escalation["small_tokens"] > 0 and escalation["small_latency_ms"] > 0
    assert escalation["mean_logprob"] < 0 and escalation["min_logprob"] <= escalation["mean_logprob"]
    assert 0 <= escalation["low_share"] <= 1
    assert result["tokens"] > 0 and result["generation_ms"] > 0  # the large attempt's own figures
    assert "logprobs" not in result  # read for the rule, not asked for
    assert view["routing"]["escalate"] is True and view["routing"]["escalation"] == escalation
    assert job_store().deliveries(job_id) == {"tasks.routing.route": 1, "tasks.small.generate": 1,
                                              "tasks.large.generate": 1}
    assert _starts(job_id) == ["small", "large"]  # the stream's clients drop the small text at the second start


def test_escalate_false_keeps_the_small_answer(client, escalating_workers):
    from helpers import wait_for_job
    from workerctl import submit

    job_id = submit(client, prompt=SMALL_PROMPT, max_tokens=8, escalate=False)
    view = wait_for_job(client, job_id, timeout=300)
    assert view["status"] == "succeeded", view
    result = view["result"]
    assert result["tier"] == "small" and "fallback" not in result
    assert "escalated" not in result and "escalation" not in result
    assert view["routing"]["escalate"] is False
    assert _starts(job_id) == ["small"]
