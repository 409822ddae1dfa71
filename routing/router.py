"""Score a prompt embedding against every intent and decide the tier."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from cache.keys import wants_embedding
from jobs.queues import TIERS
from routing import signals
from routing.intents import RouteTable
from routing.language import detect_lang

SIMILARITY_SCORINGS = ("centroid", "max", "topk")
SCORINGS = (*SIMILARITY_SCORINGS, "logreg")


@dataclass(frozen=True)
class RoutingDecision:
    """Why a prompt went where it went."""

    intent: str
    tier: str
    score: float
    threshold: float
    rule: str  # matched | fallback | forced, or a text rule (RULES): code_task | depth_request | short_...
    top: list[list]  # [[intent, score], ...] best first
    language: str = ""  # ISO 639-1 code of the prompt's language (routing.language.detect_lang); "" if unknown

    def as_dict(self) -> dict:
        return asdict(self)


UNCLASSIFIED = "unclassified"  # the intent of a prompt sent to a forced tier without being embedded

# Rules that set the tier from the prompt's text when the embedding is not to be trusted (routing.signals):
# intent, score and threshold stay the embedding's, so a decision shows what the rule overrode.
CODE_TASK = "code_task"  # a programming task (signature + docstring, "implement this function"...): small -> large
DEPTH_REQUEST = "depth_request"  # asks outright for a worked answer ("step by step", "in detail"): small -> large
SHORT_FOREIGN = "short_foreign"  # short non-English chat the English model cannot place: large -> small
SHORT_FALLBACK = "short_fallback"  # short chat whose best (not passing) intent is small-tier: large -> small
RULES = (CODE_TASK, DEPTH_REQUEST, SHORT_FOREIGN, SHORT_FALLBACK)
SHORT_WORDS = 12  # at most this many words (routing.signals.profile) for SHORT_FOREIGN and SHORT_FALLBACK
READABLE_LATIN_SHARE = 0.5  # below this share of Latin letters the model reads nothing of the prompt
# No score exceeds 1 (cosine, probability): an intent whose threshold is above it is switched off, and
# the rules respect that (no SHORT_* rule when every small-tier intent is off, nor one that trusts an off intent).
MAX_SCORE = 1.0


def prompt_language(prompt: Optional[str]) -> str:
    """The ISO 639-1 code of a prompt's language, from its start; "" for no prompt."""
    return detect_lang(prompt[:signals.SCAN_CHARS]) if prompt else ""


def forced_decision(tier: str, prompt: Optional[str] = None) -> RoutingDecision:
    """The decision for a forced tier when nothing needs the prompt's embedding: no intent is scored."""
    return RoutingDecision(UNCLASSIFIED, tier, 0.0, 0.0, "forced", [], prompt_language(prompt))


def decision_without_embedding(job: dict, semantic_cache_entries: int) -> Optional[RoutingDecision]:
    """The decision for a job that needs no embedding, or None: a forced tier whose answer the semantic
    cache (of `semantic_cache_entries`) neither looks up nor stores. Such a job needs no routing worker."""
    tier = job.get("tier")
    if tier in TIERS and not wants_embedding(job, semantic_cache_entries):
        prompt = job.get("prompt")
        return forced_decision(tier, prompt if isinstance(prompt, str) else None)
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
    and its thresholds to the parameters file. When the prompt's text is known (`route`,
    or `decide(..., prompt=)`), the text rules (RULES) may then change the tier, and the
    decision carries the prompt's language; `rules=False` leaves the embedding alone.
    """

    def __init__(self, table: RouteTable, encode: Callable[[Sequence[str]], np.ndarray],
                 scoring: str = "topk", k: int = 3, classifier: Optional[LinearClassifier] = None,
                 rules: bool = True) -> None:
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
        self.rules = rules
        self._small_enabled = any(i.tier == "small" and i.threshold <= MAX_SCORE for i in table.intents)
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

    def decide(self, embedding: np.ndarray, forced_tier: Optional[str] = None,
               prompt: Optional[str] = None) -> RoutingDecision:
        """The winning intent is the best-scoring one that passes its own threshold; then, given the
        prompt, a text rule may change the tier (`text_rule`)."""
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
        language = prompt_language(prompt)
        if prompt is not None and self.rules and rule != "forced":
            best = self.table.intents[int(order[0])]
            override = text_rule(prompt, language, tier, rule, best.tier, best.threshold <= MAX_SCORE,
                                 self._small_enabled)
            tier, rule = override or (tier, rule)
        return RoutingDecision(intent.name, tier, round(float(scores[chosen]), 4), intent.threshold, rule, top,
                               language)

    def route(self, prompt: str, forced_tier: Optional[str] = None) -> tuple[RoutingDecision, np.ndarray]:
        """Embed once and decide; the embedding is returned for reuse (semantic cache)."""
        embedding = self.encode([prompt])[0]
        return self.decide(embedding, forced_tier, prompt), embedding


def text_rule(prompt: str, language: str, tier: str, rule: str, best_tier: str = "large", best_enabled: bool = True,
              small_enabled: bool = True) -> Optional[tuple[str, str]]:
    """(tier, rule) when a text rule overrides the embedding's `tier` (reached by `rule`), else None.

    `best_tier` is the tier of the best-scoring intent (passing or not), `best_enabled` whether that
    intent can pass at all (threshold <= MAX_SCORE), `small_enabled` whether some small-tier intent can.

    - CODE_TASK: a small-tier decision for a prompt that asks for a piece of software to be written
      (routing.signals.code_task) goes large: a question about code is small, writing a function is not.
    - DEPTH_REQUEST: so does one for a prompt that asks outright for a worked answer
      (routing.signals.depth_request: "step by step", "in detail", "show your work", "trade-offs").
    - SHORT_FOREIGN: a large-tier decision for a non-English prompt goes small when the prompt is short
      (at most SHORT_WORDS words), asks for no large-tier work (routing.signals.asks_for_work: code,
      math, words asking to write, explain, plan or solve) and either no intent passed its threshold or
      the prompt is in a script the English model cannot read (under READABLE_LATIN_SHARE Latin
      letters), where what the embedding says is noise.
    - SHORT_FALLBACK: so does an English one on which no intent passed but the best-scoring one is
      small-tier (and switched on): a short chat line the model half-recognises, not a task.
    Neither SHORT_* rule fires when every small-tier intent is switched off (thresholds above MAX_SCORE).
    """
    if tier == "small":
        if signals.code_task(prompt):
            return "large", CODE_TASK
        return ("large", DEPTH_REQUEST) if signals.depth_request(prompt) else None
    foreign = language not in ("en", "")
    if not small_enabled or (rule != "fallback" and not foreign):
        return None
    if rule == "fallback" and not foreign and not (best_tier == "small" and best_enabled):
        return None
    words, latin_share = signals.profile(prompt)
    if words > SHORT_WORDS or (rule != "fallback" and latin_share >= READABLE_LATIN_SHARE):
        return None
    if signals.asks_for_work(prompt):
        return None
    return "small", SHORT_FOREIGN if foreign else SHORT_FALLBACK


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
