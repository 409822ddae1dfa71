"""`python -m bench.escalation`: calibrate escalation's weakness rule and draw its trade-off curve.

Every prompt of routing/data/dev.jsonl (fitting) and routing/data/test.jsonl (report) runs on the small
tier's engine in this process (greedy, `--max-tokens`, with the sampled tokens' log-probabilities), as
if the router had sent it small; the large tier's engine answers them too, for the added cost. The tier
labels say which prompts escalation should catch: a prompt labelled large answered small should move up,
one labelled small should not. routing/data/ood/ is not used.

For each statistic of engines.confidence (mean and minimum log-probability, share of tokens below a floor)
and each threshold, "recovered" is the share of label-large prompts flagged weak and "needless" the share
of label-small prompts flagged weak. The rule fitted on dev maximises recovered - needless (Youden's J)
among the thresholds whose needless share on dev stays within `--max-needless` (default 0.2: escalating
most small prompts would undo the routing); the unconstrained optimum is printed too. The report applies
the chosen threshold to test: recovered, needless, and the large-tier tokens it adds per routed-small prompt. The curve (recovered against needless, over thresholds) goes to docs/escalation-curve.png.

    python -m bench.escalation                  # runs the engines (a few minutes), then fits and plots
    python -m bench.escalation --reuse          # fits and plots from the saved runs (reports/escalation-runs.json)
"""
from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from engines.confidence import EscalationRule, answer_stats
from settings import ROOT

DATA = ROOT / "routing" / "data"
RUNS = ROOT / "reports" / "escalation-runs.json"
CURVE = ROOT / "docs" / "escalation-curve.png"
FLOORS = (-1.0, -2.0, -3.0, -4.0)
STAT_FIELDS = {"mean": "mean_logprob", "min": "min_logprob", "low_share": "low_share"}


def _run_one(engine, prompt: str, max_tokens: int) -> dict:
    from engines.base import GenerationRequest

    request = GenerationRequest([{"role": "user", "content": prompt}], max_tokens, logprobs=0)
    started, logprobs, tokens, text = time.perf_counter(), [], 0, []
    for chunk in engine.generate(request):
        tokens += chunk.token is not None and chunk.finish_reason != "stop"
        text.append(chunk.text)
        if chunk.logprob is not None:
            logprobs.append(chunk.logprob["logprob"])
    return {"tokens": tokens, "logprobs": logprobs, "ms": round((time.perf_counter() - started) * 1000, 1),
            "text": "".join(text)}


def run_engines(max_tokens: int, width: int) -> dict:
    """Both tiers' answers to every dev and test prompt: {split: [{prompt, tier, intent, small, large}]}."""
    from engines.provider import get_engine, served_models

    os.environ.setdefault("ENGINE_MAX_BATCH", str(width))
    rows = {split: [json.loads(line) for line in (DATA / f"{split}.jsonl").read_text().splitlines() if line.strip()]
            for split in ("dev", "test")}
    out: dict = {"max_tokens": max_tokens, "models": served_models(), "splits": {}}
    for split, items in rows.items():
        out["splits"][split] = [dict(item) for item in items]
    for tier in ("small", "large"):
        engine = get_engine(tier)
        for split, items in out["splits"].items():
            started = time.time()
            with ThreadPoolExecutor(width) as pool:
                answers = list(pool.map(lambda item: _run_one(engine, item["prompt"], max_tokens), items))
            for item, answer in zip(items, answers):
                item[tier] = answer
            print(f"{tier} {split}: {len(items)} prompts in {time.time() - started:.0f}s", flush=True)
    return out


def _stat_values(items: list[dict], stat: str, floor: float) -> list[float]:
    values = []
    for item in items:
        stats = answer_stats(item["small"]["logprobs"], floor)
        values.append(0.0 if stats is None else getattr(stats, STAT_FIELDS[stat]))  # nothing generated: never weak
    return values


def _weak(values: list[float], stat: str, threshold: float) -> list[bool]:
    # mean/min: weak below the threshold; low_share: weak above it.
    return [v > threshold if stat == "low_share" else v < threshold for v in values]


def _rates(items: list[dict], flags: list[bool]) -> dict:
    large = [f for item, f in zip(items, flags) if item["tier"] == "large"]
    small = [f for item, f in zip(items, flags) if item["tier"] == "small"]
    added = sum(item["large"]["tokens"] for item, f in zip(items, flags) if f)
    small_tokens = sum(item["small"]["tokens"] for item in items)
    return {"recovered": sum(large) / max(len(large), 1), "needless": sum(small) / max(len(small), 1),
            "escalated": sum(flags), "prompts": len(items), "large_prompts": len(large), "small_prompts": len(small),
            "added_tokens": added, "added_tokens_per_prompt": added / max(len(items), 1),
            "added_tokens_share": added / max(small_tokens, 1)}


def _thresholds(values: list[float], stat: str) -> list[float]:
    """Midpoints between the distinct values, plus one beyond each end (all weak / none weak)."""
    distinct = sorted(set(round(v, 6) for v in values))
    mids = [(a + b) / 2 for a, b in zip(distinct, distinct[1:])]
    return [distinct[0] - 1e-3, *mids, distinct[-1] + 1e-3]


def curve(items: list[dict], stat: str, floor: float) -> list[tuple[float, dict]]:
    values = _stat_values(items, stat, floor)
    return [(t, _rates(items, _weak(values, stat, t))) for t in _thresholds(values, stat)]


def fit(runs: dict, max_needless: float = 1.0) -> dict:
    """The candidate rules on dev (best J first, needless share within `max_needless`), the chosen one and
    its figures on test."""
    dev, test = runs["splits"]["dev"], runs["splits"]["test"]
    candidates = []
    for stat, floors in (("mean", (None,)), ("min", (None,)), ("low_share", FLOORS)):
        for floor in floors:
            points = [p for p in curve(dev, stat, floor if floor is not None else -2.0)
                      if p[1]["needless"] <= max_needless]
            threshold, rates = max(points, key=lambda p: (p[1]["recovered"] - p[1]["needless"], -p[1]["needless"]))
            candidates.append({"stat": stat, "floor": floor, "threshold": round(threshold, 4),
                               "dev_j": round(rates["recovered"] - rates["needless"], 4), "dev": rates})
    candidates.sort(key=lambda c: -c["dev_j"])
    best = candidates[0]
    floor = best["floor"] if best["floor"] is not None else -2.0
    test_rates = _rates(test, _weak(_stat_values(test, best["stat"], floor), best["stat"], best["threshold"]))
    return {"candidates": candidates, "chosen": {**best, "test": test_rates}, "settings": _as_settings(best),
            "max_needless": max_needless}


def _as_settings(best: dict) -> dict:
    """The ESCALATION_* settings that apply the chosen rule (tasks.escalation.EscalationRule)."""
    if best["stat"] == "mean":
        return {"ESCALATION_MEAN_LOGPROB": best["threshold"]}
    if best["stat"] == "min":
        return {"ESCALATION_MIN_LOGPROB": best["threshold"]}
    return {"ESCALATION_LOW_FLOOR": best["floor"], "ESCALATION_LOW_SHARE": best["threshold"]}


def check_rule(runs: dict, settings: dict) -> None:
    """How many test prompts the chosen settings escalate, read as the platform reads them."""
    rule = EscalationRule(**{name.removeprefix("ESCALATION_").lower(): value for name, value in settings.items()})
    flags = [rule.weak(rule.stats(item["small"]["logprobs"])) for item in runs["splits"]["test"]]
    print(f"the settings on test: {sum(flags)} of {len(flags)} escalated", flush=True)


def plot(runs: dict, fitted: dict, path: Path, unconstrained: dict | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = fitted["chosen"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8))
    for ax, split in zip(axes, ("dev", "test")):
        items = runs["splits"][split]
        for stat, floor, style in (("mean", None, "-"), ("min", None, "--"),
                                   ("low_share", chosen["floor"] if chosen["stat"] == "low_share" else -2.0, ":")):
            points = curve(items, stat, floor if floor is not None else -2.0)
            label = stat if floor is None else f"share below {floor:g}"
            ax.plot([p[1]["needless"] for p in points], [p[1]["recovered"] for p in points], style, label=label)
        ax.plot([0, 1], [0, 1], color="grey", linewidth=0.6, label="chance")
        rates = chosen["dev"] if split == "dev" else chosen["test"]
        ax.scatter([rates["needless"]], [rates["recovered"]], color="red", zorder=3,
                   label=f"chosen (dev needless <= {fitted['max_needless']:g}): {chosen['stat']} "
                         f"{'>' if chosen['stat'] == 'low_share' else '<'} {chosen['threshold']:g}")
        if unconstrained is not None:
            other = unconstrained["chosen"]
            rates = other["dev"] if split == "dev" else other["test"]
            ax.scatter([rates["needless"]], [rates["recovered"]], color="black", marker="x", zorder=3,
                       label=f"best J, no cap: {other['stat']} {'>' if other['stat'] == 'low_share' else '<'} "
                             f"{other['threshold']:g}")
        ax.set_title(f"{split}.jsonl (small tier's answers, max_tokens={runs['max_tokens']})")
        ax.set_xlabel("needless: share of label-small prompts escalated")
        ax.set_ylabel("recovered: share of label-large prompts escalated")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle("Escalation trade-off over thresholds (small answer's token log-probabilities)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--width", type=int, default=4, help="prompts generated at once")
    parser.add_argument("--reuse", action="store_true", help="fit from the saved runs instead of running the engines")
    parser.add_argument("--max-needless", type=float, default=0.2,
                        help="highest share of label-small prompts the chosen rule may escalate on dev")
    parser.add_argument("--runs", type=Path, default=RUNS)
    parser.add_argument("--curve", type=Path, default=CURVE)
    args = parser.parse_args()
    if args.reuse:
        runs = json.loads(args.runs.read_text())
    else:
        runs = run_engines(args.max_tokens, args.width)
        args.runs.parent.mkdir(parents=True, exist_ok=True)
        args.runs.write_text(json.dumps(runs))
    fitted, unconstrained = fit(runs, args.max_needless), fit(runs)
    for candidate in fitted["candidates"]:
        print(json.dumps({k: v for k, v in candidate.items() if k != "dev"} | {
            "dev_recovered": round(candidate["dev"]["recovered"], 3),
            "dev_needless": round(candidate["dev"]["needless"], 3)}))
    print(json.dumps({"chosen": fitted["chosen"], "settings": fitted["settings"]}, indent=1))
    print(json.dumps({"best_j_without_cap": unconstrained["chosen"], "settings": unconstrained["settings"]}, indent=1))
    check_rule(runs, fitted["settings"])
    plot(runs, fitted, args.curve, unconstrained)
    print(f"curve: {args.curve}")


if __name__ == "__main__":
    main()
