"""Score a prompt embedding against every intent and decide the tier."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from cache.keys import wants_embedding
from jobs.queues import TIERS
from routing.intents import RouteTable

SIMILARITY_SCORINGS = ("centroid", "max", "topk")
SCORINGS = (*SIMILARITY_SCORINGS, "logreg")


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


UNCLASSIFIED = "unclassified"  # the intent of a prompt sent to a forced tier without being embedded


def forced_decision(tier: str) -> RoutingDecision:
    """The decision for a forced tier when nothing needs the prompt's embedding: no intent is scored."""
    return RoutingDecision(UNCLASSIFIED, tier, 0.0, 0.0, "forced", [])


def decision_without_embedding(job: dict, semantic_cache_entries: int) -> Optional[RoutingDecision]:
    """The decision for a job that needs no embedding, or None: a forced tier whose answer the semantic
    cache (of `semantic_cache_entries`) neither looks up nor stores. Such a job needs no routing worker."""
    tier = job.get("tier")
    if tier in TIERS and not wants_embedding(job, semantic_cache_entries):
        return forced_decision(tier)
    return None


@dataclass(frozen=True)
class LinearClassifier:
    """Multinomial logistic regression over embeddings: softmax(X @ coef.T + intercept)."""

    classes: tuple[str, ...]
    coef: np.ndarray  # (len(classes), dim)
    intercept: np.ndarray  # (len(classes),)

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        """Class probabilities, one row per embedding, columns in `classes` order."""
        logits = embeddings @ self.coef.T + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        odds = np.exp(logits)
        return odds / odds.sum(axis=1, keepdims=True)


class Router:
    """Scores a prompt against every intent and picks the tier.

    Scores are cosine similarities to the intent's utterances (`centroid`, `max`, or
    `topk`: mean of the k most similar) or, for `logreg`, the probabilities of a fitted
    classifier. `python -m routing.calibrate` measures them all and writes the winner
    and its thresholds to the parameters file.
    """

    def __init__(self, table: RouteTable, encode: Callable[[Sequence[str]], np.ndarray],
                 scoring: str = "topk", k: int = 3, classifier: Optional[LinearClassifier] = None) -> None:
        if scoring not in SCORINGS:
            raise ValueError(f"scoring must be one of {SCORINGS}")
        self.table = table
        self.encode = encode
        self.scoring = scoring
        self.k = k
        self.names = [intent.name for intent in table.intents]
        self.thresholds = np.array([intent.threshold for intent in table.intents])
        self.large = np.array([intent.tier == "large" for intent in table.intents])
        if scoring == "logreg":
            if classifier is None or sorted(classifier.classes) != sorted(self.names):
                raise ValueError("scoring 'logreg' needs a classifier fitted on exactly the route table's intents")
            self._columns = [classifier.classes.index(name) for name in self.names]
        self.classifier = classifier
        if scoring in SIMILARITY_SCORINGS:
            self._utterances = [encode(list(intent.utterances)) for intent in table.intents]
            self._centroids = np.stack([_unit(m.mean(axis=0)) for m in self._utterances])

    def score_matrix(self, embeddings: np.ndarray) -> np.ndarray:
        """Scores of unit-length embeddings (one per row) for each intent, in table order."""
        if self.scoring == "logreg":
            return self.classifier.probabilities(embeddings)[:, self._columns]
        if self.scoring == "centroid":
            return embeddings @ self._centroids.T
        per_intent = [embeddings @ m.T for m in self._utterances]  # each (n, utterances)
        if self.scoring == "max":
            return np.stack([s.max(axis=1) for s in per_intent], axis=1)
        return np.stack([np.sort(s, axis=1)[:, -self.k:].mean(axis=1) for s in per_intent], axis=1)

    def scores(self, embedding: np.ndarray) -> np.ndarray:
        """Scores of one unit-length embedding for each intent, in table order."""
        return self.score_matrix(embedding[None, :])[0]

    def decide(self, embedding: np.ndarray, forced_tier: Optional[str] = None) -> RoutingDecision:
        """The winning intent is the best-scoring one that passes its own threshold."""
        scores = self.scores(embedding)
        order = np.argsort(-scores)
        top = [[self.names[i], round(float(scores[i]), 4)] for i in order[:3]]
        winner = int(winners(scores[None, :], self.thresholds)[0])
        chosen = winner if winner >= 0 else int(order[0])
        intent = self.table.intents[chosen]
        if forced_tier in ("small", "large"):
            tier, rule = forced_tier, "forced"
        elif winner >= 0:
            tier, rule = intent.tier, "matched"
        else:
            tier, rule = self.table.default_tier, "fallback"
        return RoutingDecision(intent.name, tier, round(float(scores[chosen]), 4), intent.threshold, rule, top)

    def route(self, prompt: str, forced_tier: Optional[str] = None) -> tuple[RoutingDecision, np.ndarray]:
        """Embed once and decide; the embedding is returned for reuse (semantic cache)."""
        embedding = self.encode([prompt])[0]
        return self.decide(embedding, forced_tier), embedding


def winners(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Per row, the index of the best-scoring intent whose score passes its threshold; -1 if none does."""
    passing = np.where(scores >= thresholds, scores, -np.inf)
    best = passing.argmax(axis=1)
    return np.where(np.isfinite(passing.max(axis=1)), best, -1)


def routed_large(scores: np.ndarray, thresholds: np.ndarray, large: np.ndarray, default_large: bool) -> np.ndarray:
    """Per row, whether the decision rule of `Router.decide` picks the large tier (vectorised)."""
    won = winners(scores, thresholds)
    return np.where(won >= 0, large[np.maximum(won, 0)], default_large)


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / (np.linalg.norm(vector) or 1.0)
