"""Intents as data: names, tiers, thresholds and example utterances read from a YAML file."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

INTENTS_FILE = Path(__file__).resolve().parent / "intents.yaml"
TIERS = ("small", "large")


def routes_path(configured: str = "") -> Path:
    """The routes file: `configured` (the ROUTES_FILE setting) if set, else the bundled intents.yaml."""
    return Path(configured.strip() or INTENTS_FILE)


@dataclass(frozen=True)
class Intent:
    """One routing target: example utterances and the tier they deserve."""

    name: str
    tier: str
    threshold: float
    utterances: tuple[str, ...]


@dataclass(frozen=True)
class RouteTable:
    """All intents plus the tier used when no intent passes its threshold."""

    intents: tuple[Intent, ...]
    default_tier: str

    def fingerprint(self) -> str:
        """Hash of what a fitted classifier depends on (names, tiers, utterances; not thresholds)."""
        content = [[i.name, i.tier, list(i.utterances)] for i in self.intents]
        return hashlib.sha256(json.dumps(content).encode()).hexdigest()[:16]

    def with_thresholds(self, thresholds: dict[str, float]) -> "RouteTable":
        """A copy whose named intents use the given thresholds; the others keep theirs."""
        unknown = set(thresholds) - {i.name for i in self.intents}
        if unknown:
            raise ValueError(f"thresholds for intents not in the routes file: {sorted(unknown)}")
        intents = tuple(replace(i, threshold=float(thresholds.get(i.name, i.threshold))) for i in self.intents)
        return replace(self, intents=intents)


def parse_route_table(data: dict) -> RouteTable:
    """Validate a decoded routes file; raise ValueError saying what is wrong."""
    if not isinstance(data, dict) or not isinstance(data.get("intents"), list) or not data["intents"]:
        raise ValueError("routes file needs a non-empty 'intents' list")
    default_tier = data.get("default_tier", "large")
    if default_tier not in TIERS:
        raise ValueError(f"default_tier must be one of {TIERS}, not {default_tier!r}")
    intents = []
    for i, raw in enumerate(data["intents"]):
        name = raw.get("name") if isinstance(raw, dict) else None
        if not name:
            raise ValueError(f"intent #{i} has no name")
        if raw.get("tier") not in TIERS:
            raise ValueError(f"intent {name!r}: tier must be one of {TIERS}")
        threshold = raw.get("threshold")
        if not isinstance(threshold, (int, float)) or not -1 <= threshold <= 1:
            raise ValueError(f"intent {name!r}: threshold must be a number in [-1, 1]")
        utterances = raw.get("utterances")
        if not isinstance(utterances, list) or not utterances or not all(isinstance(u, str) and u.strip() for u in utterances):
            raise ValueError(f"intent {name!r}: utterances must be a non-empty list of strings")
        intents.append(Intent(name, raw["tier"], float(threshold), tuple(utterances)))
    if len({i.name for i in intents}) != len(intents):
        raise ValueError("intent names must be unique")
    return RouteTable(tuple(intents), default_tier)


def load_route_table(path: Path | str | None = None) -> RouteTable:
    """Read and validate the routes file (default: `routes_path()`)."""
    with open(path or routes_path(), encoding="utf-8") as fh:
        return parse_route_table(yaml.safe_load(fh))
