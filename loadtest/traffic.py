"""The traffic mix shared by the Locust load test and the benchmark.

Prompts come from the hand-labelled routing data (`routing/data/labelled.jsonl`),
so every request has a known intent and tier. A request is drawn in three steps:
- tier: small with probability `small_share` (about 60% by default), else large;
- intent and prompt: uniform within the tier, except that with probability
  `repeat_share` the prompt is one of a few popular ones (skewed towards the
  first), the way real users repeat questions — so a response cache has hits;
- length: short (the prompt as written), medium or long (a pasted context of a
  few hundred or a few thousand characters in front of it), with max_tokens
  growing with it.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
LABELLED = ROOT / "routing" / "data" / "labelled.jsonl"

# Share of requests per length class, the paragraphs of context each gets, and max_tokens.
LENGTHS = {
    "short": (0.70, 0, 8),
    "medium": (0.22, 2, 12),
    "long": (0.08, 8, 16),
}
CONTEXT_PARAGRAPH = (
    "Here is some context I pasted from my notes. The service handles a few hundred requests "
    "a minute, most of them short questions, and a nightly batch job rebuilds the search index. "
    "Last week the batch overlapped with peak traffic and response times doubled for an hour. "
)


@dataclass(frozen=True)
class Request:
    """One request of the mix: what to send and what the router should make of it."""

    prompt: str
    tier: str
    intent: str
    length: str
    max_tokens: int
    repeated: bool = False


def labelled_prompts(path: Path = LABELLED) -> list[dict]:
    """Rows of `{"prompt", "tier", "intent"}` from the labelled routing data."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


class TrafficMix:
    """Draws requests with the weights above; a seed makes the sequence repeatable."""

    def __init__(self, seed: Optional[int] = None, small_share: float = 0.6, repeat_share: float = 0.25,
                 popular: int = 12, max_tokens_scale: float = 1.0) -> None:
        self.random = random.Random(seed)
        self.small_share = small_share
        self.repeat_share = repeat_share
        self.max_tokens_scale = max_tokens_scale
        rows = labelled_prompts()
        self.by_tier = {tier: [r for r in rows if r["tier"] == tier] for tier in ("small", "large")}
        # The popular prompts are fixed for a given seed, so repeats hit the same entries.
        self.popular = {tier: self.random.sample(rows, popular) for tier, rows in self.by_tier.items()}

    def next(self) -> Request:
        tier = "small" if self.random.random() < self.small_share else "large"
        if self.random.random() < self.repeat_share:
            # Zipf-like: the first popular prompt is asked most often.
            popular = self.popular[tier]
            row = popular[min(int(self.random.paretovariate(1.2)) - 1, len(popular) - 1)]
            return self._request(row, "short", repeated=True)
        row = self.random.choice(self.by_tier[tier])
        length = self.random.choices(list(LENGTHS), weights=[w for w, _, _ in LENGTHS.values()])[0]
        return self._request(row, length)

    def distinct(self, count: int, lengths: tuple[str, ...] = tuple(LENGTHS)) -> list[Request]:
        """`count` different requests of the given length classes, in mix order."""
        seen, out = set(), []
        while len(out) < count:
            request = self.next()
            if request.prompt not in seen and not request.repeated and request.length in lengths:
                seen.add(request.prompt)
                out.append(request)
        return out

    def _request(self, row: dict, length: str, repeated: bool = False) -> Request:
        _, paragraphs, max_tokens = LENGTHS[length]
        prompt = (CONTEXT_PARAGRAPH * paragraphs + "\n\n" + row["prompt"]) if paragraphs else row["prompt"]
        return Request(prompt, row["tier"], row["intent"], length,
                       max(1, round(max_tokens * self.max_tokens_scale)), repeated)
