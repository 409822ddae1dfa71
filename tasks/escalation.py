"""Escalation (a cascade, as in FrugalGPT and AutoMix): a job routed small whose small answer looks weak
is run again on the large tier.

"Weak" is read from the answer's token log-probabilities (the engine's, for the sampled tokens): their
mean, their minimum, and the share of tokens below a floor (engines.confidence). An answer is weak when any
armed part of the rule says so (`EscalationRule`): mean below ESCALATION_MEAN_LOGPROB, minimum below
ESCALATION_MIN_LOGPROB, or more than ESCALATION_LOW_SHARE of its tokens below ESCALATION_LOW_FLOOR.
bench/escalation.py calibrates the thresholds on routing/data/dev.jsonl (docs/operations.md, "Escalation").

The routing worker arms a job (`routing["escalate"]`, `armed`); the small worker judges the answer and
moves the job on through tier fallback's path (tasks.fallback.escalated) with reason `weak_answer`.
"""
from __future__ import annotations

from typing import Optional

from settings import Settings



def parse_intents(raw: str) -> Optional[frozenset[str]]:
    """ESCALATION_INTENTS: None (every intent) for `*` or empty, else the named intents."""
    names = frozenset(name.strip() for name in raw.split(",") if name.strip())
    return None if not names or "*" in names else names


def armed(settings: Settings, job: dict, routing: dict) -> bool:
    """Whether the job's small answer is to be judged: escalation on, routed (not forced) to small and not
    moved there by fallback, the intent listed, n=1, and the request did not say `"escalate": false`."""
    if not settings.escalation or job.get("escalate") is False:
        return False
    if routing.get("tier") != "small" or routing.get("rule") == "forced" or "fallback" in routing:
        return False
    if job.get("n", 1) != 1:
        return False
    intents = parse_intents(settings.escalation_intents)
    return intents is None or routing.get("intent") in intents


def arm(settings: Settings, job: dict, routing: dict) -> dict:
    """`routing` with `escalate` (whether escalation is armed for this job) after the router's decision;
    with ESCALATION off, `routing` as it is (no field)."""
    if not settings.escalation:
        return routing
    return {**routing, "escalate": armed(settings, job, routing)}

