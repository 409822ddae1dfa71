"""Score a prompt embedding against every intent and decide the tier."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from routing.intents import RouteTable

SCORINGS = ("centroid", "max", "topk")


@dataclass(frozen=True)
class RoutingDecision:
    """Why a prompt went where it went."""

    intent: str
    tier: str
    score: float
    threshold: float
    rule: str  # matched | fallback | forced
    top: list[list]  # [[intent, score], ...] best first

    def as_dict(self) -> dict:
        return asdict(self)


class Router:
    """Cosine-similarity router over a route table.

    Scoring `topk` (mean of the k most similar utterances) is the default; `centroid`
    and `max` are kept for measurement with `python -m routing.evaluate`.
    """

    def __init__(self, table: RouteTable, encode: Callable[[Sequence[str]], np.ndarray],
                 scoring: str = "topk", k: int = 3) -> None:
        if scoring not in SCORINGS:
            raise ValueError(f"scoring must be one of {SCORINGS}")
        self.table = table
        self.encode = encode
        self.scoring = scoring
        self.k = k
        self._utterances = [encode(list(intent.utterances)) for intent in table.intents]
        self._centroids = np.stack([_unit(m.mean(axis=0)) for m in self._utterances])

    def scores(self, embedding: np.ndarray) -> np.ndarray:
        """Similarity of one unit-length embedding to each intent, in table order."""
        if self.scoring == "centroid":
            return self._centroids @ embedding
        per_intent = [m @ embedding for m in self._utterances]
        if self.scoring == "max":
            return np.array([s.max() for s in per_intent])
        return np.array([np.sort(s)[-self.k:].mean() for s in per_intent])

    def decide(self, embedding: np.ndarray, forced_tier: Optional[str] = None) -> RoutingDecision:
        """The winning intent is the best-scoring one that passes its own threshold."""
        scores = self.scores(embedding)
        order = np.argsort(-scores)
        top = [[self.table.intents[i].name, round(float(scores[i]), 4)] for i in order[:3]]
        winner = next((i for i in order if scores[i] >= self.table.intents[i].threshold), None)
        best = self.table.intents[order[0]]
        chosen = self.table.intents[winner] if winner is not None else best
        score = float(scores[winner if winner is not None else order[0]])
        if forced_tier in ("small", "large"):
            tier, rule = forced_tier, "forced"
        elif winner is not None:
            tier, rule = chosen.tier, "matched"
        else:
            tier, rule = self.table.default_tier, "fallback"
        return RoutingDecision(chosen.name, tier, round(score, 4), chosen.threshold, rule, top)

    def route(self, prompt: str, forced_tier: Optional[str] = None) -> tuple[RoutingDecision, np.ndarray]:
        """Embed once and decide; the embedding is returned for reuse (semantic cache)."""
        embedding = self.encode([prompt])[0]
        return self.decide(embedding, forced_tier), embedding


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / (np.linalg.norm(vector) or 1.0)
