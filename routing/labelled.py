"""Labelled routing data: JSON lines of {"prompt", "tier", "intent"?}, and its deterministic split."""
from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from pathlib import Path

from routing.intents import TIERS

DEV_SHARE = 0.6


def load_labelled(path: Path | str) -> list[dict]:
    """Read and validate a labelled file; ValueError names the first bad line."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not JSON ({exc})") from None
            if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
                raise ValueError(f"{path}:{number}: needs a non-empty 'prompt' string")
            if row.get("tier") not in TIERS:
                raise ValueError(f"{path}:{number}: 'tier' must be one of {TIERS}")
            if row.get("intent") is not None and not isinstance(row["intent"], str):
                raise ValueError(f"{path}:{number}: 'intent' must be a string when present")
            rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no labelled rows")
    return rows


def split_dev_test(rows: list[dict], dev_share: float = DEV_SHARE) -> tuple[list[dict], list[dict]]:
    """Stratified by intent (or tier when unlabelled): per group, sorted by the SHA-256 of the
    prompt, the first round(dev_share * n) go to dev. The rule routing/data was split with."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        groups[row.get("intent") or row["tier"]].append(row)
    dev, test = [], []
    for group in groups.values():
        group.sort(key=lambda row: hashlib.sha256(row["prompt"].encode("utf-8")).hexdigest())
        cut = round(dev_share * len(group))
        dev += group[:cut]
        test += group[cut:]
    return dev, test
