"""How confident an answer looks, from its tokens' log-probabilities: the statistics escalation reads
(tasks.escalation) and its weakness rule, shared with the calibration (bench/escalation.py)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Optional

from settings import Settings

WEAK_ANSWER = "weak_answer"  # the reason a job moved on for (routing["fallback"]["reason"])

OFF_MIN_LOGPROB = -9999.0  # engines clamp a log-probability here (engines.logprobs): a minimum never below it


@dataclass(frozen=True)
class AnswerStats:
    """What the rule reads of an answer: its tokens' mean and minimum log-probability, and the share of
    them below the rule's floor."""

    tokens: int
    mean_logprob: float
    min_logprob: float
    low_share: float

    def as_dict(self) -> dict:
        return {"mean_logprob": round(self.mean_logprob, 4), "min_logprob": round(self.min_logprob, 4),
                "low_share": round(self.low_share, 4)}


def answer_stats(logprobs: Iterable[float], floor: float) -> Optional[AnswerStats]:
    """The stats of an answer's token log-probabilities; None for an answer with no token (nothing to judge)."""
    values = [float(v) for v in logprobs if v is not None and not math.isnan(float(v))]
    if not values:
        return None
    return AnswerStats(len(values), sum(values) / len(values), min(values),
                       sum(v < floor for v in values) / len(values))


@dataclass(frozen=True)
class EscalationRule:
    """When an answer is weak. A part is off at its neutral value: mean and minimum at -9999 (never
    below), the low share at 1.0 (never above)."""

    mean_logprob: float = OFF_MIN_LOGPROB
    min_logprob: float = OFF_MIN_LOGPROB
    low_floor: float = -2.0
    low_share: float = 1.0

    @classmethod
    def from_settings(cls, settings: Settings) -> "EscalationRule":
        return cls(settings.escalation_mean_logprob, settings.escalation_min_logprob,
                   settings.escalation_low_floor, settings.escalation_low_share)

    def stats(self, logprobs: Iterable[float]) -> Optional[AnswerStats]:
        return answer_stats(logprobs, self.low_floor)

    def weak(self, stats: Optional[AnswerStats]) -> bool:
        if stats is None:
            return False
        return (stats.mean_logprob < self.mean_logprob or stats.min_logprob < self.min_logprob
                or stats.low_share > self.low_share)
