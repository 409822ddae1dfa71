"""How often the semantic cache hits, and hits wrongly, on labelled prompt pairs.

Each pair is decided the way `cache.semantic` decides a lookup: the asked prompt (`b`) may be
answered by the cached one (`a`) when their embeddings' cosine similarity is at least the
threshold and the guard (`cache.guard.mismatch`) finds no difference. Pairs come from
tests/fixtures/cache_pairs/ (split into `dev`, used to design the guard's rules, and `held-out`,
only measured) and the older fixtures beside them. The caller brings the encoder (the cache
never imports the routing embedder), so the measurement runs as a test:

    HF_HUB_OFFLINE=1 CACHE_GUARD_BASELINE=/path/to/previous/guard.py \
        python -m pytest tests/test_cache_guard.py -s -k rates

`CACHE_GUARD_BASELINE` (optional) names another guard module's file to compare with.
"""
from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Callable, Optional

import numpy as np

from cache import guard

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
PAIR_FILES = {
    "near misses": (FIXTURES / "cache_pairs" / "near_misses.jsonl", False),
    "paraphrases": (FIXTURES / "cache_pairs" / "paraphrases.jsonl", True),
    "paraphrases by others": (FIXTURES / "cache_pairs" / "external_paraphrases.jsonl", True),
    "older near misses": (FIXTURES / "cache_near_misses.jsonl", False),
    "older paraphrases": (FIXTURES / "cache_paraphrases.jsonl", True),
}
Guard = Callable[[str, str], Optional[str]]


def load_pairs(path: Path, same: bool) -> list[dict]:
    """The pairs of one JSONL file; older files have no `same` or `split`, so they get the file's label."""
    with open(path, encoding="utf-8") as fh:
        pairs = [json.loads(line) for line in fh if line.strip()]
    for pair in pairs:
        pair.setdefault("same", same)
        pair.setdefault("split", "dev")
    return pairs


def load_guard(path: Path) -> ModuleType:
    """A guard module from a file, imported under a name of its own."""
    spec = importlib.util.spec_from_file_location("baseline_guard", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def cosines(pairs: list[dict], encode: Callable[[list[str]], np.ndarray]) -> np.ndarray:
    """Cosine similarity of each pair's two prompts, all prompts encoded in one call."""
    texts = sorted({p[side] for p in pairs for side in ("a", "b")})
    vectors = encode(texts)
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    row = {text: i for i, text in enumerate(texts)}
    return np.array([float(vectors[row[p["a"]]] @ vectors[row[p["b"]]]) for p in pairs])


def accepted(pairs: list[dict], similarity: np.ndarray, threshold: float, check: Optional[Guard]) -> list[bool]:
    """Whether the cache would answer `b` with `a`'s answer: similarity at the threshold and the guard's consent."""
    return [bool(s >= threshold) and (check is None or check(p["b"], p["a"]) is None)
            for p, s in zip(pairs, similarity)]


def guard_cost_us(pairs: list[dict], check: Guard, rounds: int = 20) -> float:
    """Mean microseconds per check over all pairs, both directions, signatures not yet cached."""
    clear = getattr(getattr(guard, "signature", None), "cache_clear", None)
    started = time.perf_counter()
    for _ in range(rounds):
        if clear is not None:
            clear()
        for p in pairs:
            check(p["a"], p["b"])
            check(p["b"], p["a"])
    return (time.perf_counter() - started) / (rounds * 2 * len(pairs)) * 1e6


def table(pairs: list[dict], similarity: np.ndarray, threshold: float,
          guards: dict[str, Optional[Guard]]) -> list[dict]:
    """One row per pair set and split: how many pairs each way of deciding accepts."""
    rows = []
    for name in PAIR_FILES:
        for split in ("dev", "held-out"):
            chosen = [i for i, p in enumerate(pairs) if p["set"] == name and p["split"] == split]
            if not chosen:
                continue
            subset, sims = [pairs[i] for i in chosen], similarity[chosen]
            row = {"set": name, "split": split, "same": subset[0]["same"], "pairs": len(subset)}
            for label, check in guards.items():
                row[label] = sum(accepted(subset, sims, threshold, check))
            rows.append(row)
    return rows


def markdown(rows: list[dict], labels: list[str]) -> str:
    """The rows as a Markdown table: hits for sets that should hit, false hits for the others."""
    lines = ["| set | split | pairs | what counts | " + " | ".join(labels) + " |",
             "|---|---|---|---|" + "---|" * len(labels)]
    for row in rows:
        cells = [f"{row[label]} ({row[label] / row['pairs']:.0%})" for label in labels]
        what = "hits" if row["same"] else "false hits"
        lines.append(f"| {row['set']} | {row['split']} | {row['pairs']} | {what} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def evaluate(encode: Callable[[list[str]], np.ndarray], threshold: float,
             baseline: Optional[Path] = None) -> dict:
    """Rows per pair set and split for the threshold alone, the baseline guard (if any) and this guard;
    their Markdown table; the guard's cost per check; and each pair with its similarity and verdict."""
    pairs = [{**p, "set": name} for name, (path, same) in PAIR_FILES.items() if path.exists()
             for p in load_pairs(path, same)]
    similarity = cosines(pairs, encode)
    guards: dict[str, Optional[Guard]] = {"threshold only": None}
    if baseline is not None:
        guards["baseline guard"] = load_guard(baseline).mismatch
    guards["guard"] = guard.mismatch
    rows = table(pairs, similarity, threshold, guards)
    verdicts = [{**p, "similarity": round(float(s), 4), "reason": guard.mismatch(p["b"], p["a"])}
                for p, s in zip(pairs, similarity)]
    return {"threshold": threshold, "rows": rows, "markdown": markdown(rows, list(guards)),
            "cost_us": round(guard_cost_us(pairs, guard.mismatch), 1), "pairs": verdicts}
