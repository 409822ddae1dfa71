"""Feedback on jobs (`POST /v1/jobs/<id>/feedback`, kept by tenants.feedback) as labelled routing rows.

- `down` with `tier`: the prompt is labelled with that tier (the one that should have answered);
- `up`: the prompt is labelled with the tier that answered (the routed one, unless a fallback moved it);
- `down` without `tier`: no tier label, ignored.

A tier label alone only moves thresholds, which cannot help when the wrong intent matches with high
confidence. So a row also gets an intent, which the classifier learns from: the routed intent when it
belongs to the labelled tier, else (`assign_intents`) the intent of the labelled tier that the current
router scores highest for the prompts making the same correction.
"""
from __future__ import annotations

from collections import Counter
from typing import Iterable, Optional

import numpy as np

from routing.intents import TIERS, RouteTable

SOURCE = "feedback"


def feedback_rows(entries: Iterable[dict], table: RouteTable) -> tuple[list[dict], dict]:
    """Labelled rows (`prompt`, `tier`, `intent` or None, `source`, `job_id`) from feedback entries, and
    counts of what was used and why the rest was not."""
    tiers = {intent.name: intent.tier for intent in table.intents}
    rows, counts = [], Counter()
    for entry in entries:
        prompt = entry.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            counts["ignored_no_prompt"] += 1
            continue
        if entry.get("rating") == "down":
            tier = entry.get("tier_wanted")
            if tier is None:
                counts["ignored_down_without_tier"] += 1
                continue
            counts["down_with_tier"] += 1
        elif entry.get("rating") == "up":
            tier = entry.get("answered_tier") or entry.get("routed_tier")
            counts["up"] += 1
        else:
            counts["ignored_unknown_rating"] += 1
            continue
        if tier not in TIERS:
            counts["ignored_no_tier"] += 1
            continue
        routed = entry.get("routed_intent")
        intent = routed if tiers.get(routed) == tier else None
        rows.append({"prompt": prompt, "tier": tier, "intent": intent, "routed_intent": routed, "source": SOURCE,
                     "job_id": entry.get("job_id")})
    return rows, {"entries": sum(counts.values()), "rows": len(rows), **dict(sorted(counts.items()))}


def assign_intents(rows: list[dict], table: RouteTable, scores: np.ndarray) -> list[dict]:
    """Rows without an intent get one of their tier's intents (`scores`: one row of intent scores per row,
    in table order, from the current router).

    Rows that make the same correction (routed to one intent, labelled the other tier) get the same
    intent: the labelled tier's intent that scores highest over all of them together. One prompt's
    scores for the intents it did not match are close to noise; spread over several intents, the
    correction would teach the classifier little.
    """
    tiers = np.array([intent.tier for intent in table.intents])
    groups: dict[tuple, list[int]] = {}
    for index, row in enumerate(rows):
        if row.get("intent") is None:
            groups.setdefault((row.get("routed_intent"), row["tier"]), []).append(index)
    chosen = {}
    for (_, tier), members in groups.items():
        total = np.where(tiers == tier, scores[members].sum(axis=0), -np.inf)
        name = table.intents[int(total.argmax())].name
        chosen.update(dict.fromkeys(members, name))
    return [{**row, "intent": chosen[index]} if index in chosen else row for index, row in enumerate(rows)]


def without_intents(rows: list[dict]) -> list[dict]:
    """Tier labels only: the rows move the thresholds and nothing else."""
    return [{**row, "intent": None} for row in rows]


def drop_prompts(rows: list[dict], prompts: Iterable[str]) -> tuple[list[dict], int]:
    """Rows whose prompt is not among `prompts` (the held-out ones: feedback must not leak into the
    measurement), and how many were dropped."""
    held = set(prompts)
    kept = [row for row in rows if row["prompt"] not in held]
    return kept, len(rows) - len(kept)


def read_feedback(database_url: str, since: Optional[str] = None) -> list[dict]:
    """Every feedback entry in the database (updated on or after the ISO date `since`)."""
    from datetime import datetime, timezone

    from tenants.database import database_engine
    from tenants.feedback import FeedbackStore

    start = datetime.fromisoformat(since).replace(tzinfo=timezone.utc) if since else None
    return FeedbackStore(database_engine(database_url)).entries(start)
