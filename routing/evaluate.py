"""How well the router does on labelled prompts: `python -m routing.evaluate --data FILE [--json]`.

Routes every prompt one at a time, as the routing worker does, with the configured
routes and parameters files (or the ones named), and prints accuracy, precision and
recall per tier, the confusion matrix, the share routed to small, latency p50/p99
and the worst misroutes.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Optional, Sequence

import numpy as np

from routing.intents import TIERS
from routing.labelled import load_labelled
from routing.live import configured_files
from routing.router import Router, RoutingDecision
from settings import get_settings

WORST = 10


def route_each(router: Router, prompts: Sequence[str]) -> tuple[list[RoutingDecision], list[float], list[float]]:
    """Decisions, wall-clock ms and this thread's CPU ms for each prompt, routed one by one."""
    router.encode(["warm up"])  # the model loads on first use; keep that out of the latencies
    decisions, wall_ms, cpu_ms = [], [], []
    for prompt in prompts:
        wall, cpu = time.perf_counter(), time.thread_time()
        decision, _ = router.route(prompt)
        cpu_ms.append((time.thread_time() - cpu) * 1000)
        wall_ms.append((time.perf_counter() - wall) * 1000)
        decisions.append(decision)
    return decisions, wall_ms, cpu_ms


def metrics(rows: list[dict], decisions: list[RoutingDecision], wall_ms: Optional[list[float]] = None,
            cpu_ms: Optional[list[float]] = None, worst: int = WORST) -> dict:
    """The evaluation report for decisions on labelled rows (latency keys only when timings are given)."""
    expected = np.array([row["tier"] for row in rows])
    routed = np.array([decision.tier for decision in decisions])
    report: dict = {"n": len(rows), "accuracy": _share(expected == routed)}
    for tier in TIERS:
        hits = int(((routed == tier) & (expected == tier)).sum())
        report[f"{tier}_precision"] = _ratio(hits, int((routed == tier).sum()))
        report[f"{tier}_recall"] = _ratio(hits, int((expected == tier).sum()))
    report["small_share"] = _share(routed == "small")
    report["confusion"] = {want: {got: int(((expected == want) & (routed == got)).sum()) for got in TIERS}
                           for want in TIERS}
    with_intent = [(row["intent"], d.intent) for row, d in zip(rows, decisions) if row.get("intent")]
    if with_intent:
        report["intent_accuracy"] = _share(np.array([want == got for want, got in with_intent]))
    if wall_ms:
        report["p50_ms"], report["p99_ms"] = (round(float(np.percentile(wall_ms, q)), 2) for q in (50, 99))
    if cpu_ms:
        report["cpu_p50_ms"] = round(float(np.percentile(cpu_ms, 50)), 2)
    report["worst"] = worst_misroutes(rows, decisions, worst)
    return report


def worst_misroutes(rows: list[dict], decisions: list[RoutingDecision], limit: int) -> list[dict]:
    """Misroutes, costly ones (large work sent to small) first, most confident first."""
    wrong = [(row, d) for row, d in zip(rows, decisions) if row["tier"] != d.tier]
    wrong.sort(key=lambda pair: (pair[0]["tier"] != "large", -pair[1].score))
    return [{"prompt": row["prompt"], "expected": row["tier"], "expected_intent": row.get("intent"),
             **d.as_dict()} for row, d in wrong[:limit]]


def format_report(report: dict) -> str:
    """The human-readable form of `metrics`."""
    lines = [f"prompts            {report['n']}",
             f"accuracy           {report['accuracy']:.3f}"]
    if "intent_accuracy" in report:
        lines.append(f"intent accuracy    {report['intent_accuracy']:.3f}")
    for tier in TIERS:
        precision, recall = report[f"{tier}_precision"], report[f"{tier}_recall"]
        lines.append(f"{tier:<6} precision   {_fmt(precision)}   recall {_fmt(recall)}")
    lines.append(f"routed to small    {report['small_share']:.1%}")
    if "p50_ms" in report:
        lines.append(f"latency            p50 {report['p50_ms']:.1f} ms   p99 {report['p99_ms']:.1f} ms"
                     f"   (CPU p50 {report.get('cpu_p50_ms', float('nan')):.1f} ms)")
    lines += ["", "confusion (rows: labelled, columns: routed)", f"{'':8}{'small':>7}{'large':>7}"]
    lines += [f"{want:8}{report['confusion'][want]['small']:>7}{report['confusion'][want]['large']:>7}"
              for want in TIERS]
    lines += ["", f"worst misroutes ({len(report['worst'])})"]
    for miss in report["worst"]:
        top = ", ".join(f"{name} {score:.3f}" for name, score in miss["top"])
        lines.append(f"  {miss['expected']}->{miss['tier']}  {miss['intent']} {miss['score']:.3f} "
                     f"(threshold {miss['threshold']:.3f}, {miss['rule']}; top: {top})")
        lines.append(f"      {miss['prompt'][:150]!r}")
    return "\n".join(lines)


def _share(mask: np.ndarray) -> float:
    return round(float(mask.mean()), 4) if mask.size else 0.0


def _ratio(hits: int, total: int) -> Optional[float]:
    return round(hits / total, 4) if total else None


def _fmt(value: Optional[float]) -> str:
    return "  n/a" if value is None else f"{value:.3f}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m routing.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="labelled JSON lines: prompt, tier, intent (optional)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    routes, params = configured_files(get_settings())
    parser.add_argument("--routes", default=str(routes), help="routes file (default: ROUTES_FILE or the bundled one)")
    parser.add_argument("--params", default=str(params),
                        help="parameters file (default: ROUTING_PARAMS_FILE or the bundled one)")
    parser.add_argument("--worst", type=int, default=WORST, help="how many misroutes to list")
    args = parser.parse_args(argv)

    from routing.embedder import Embedder
    from routing.live import load_router

    try:
        rows = load_labelled(args.data)
        router = load_router(args.routes, args.params, Embedder().encode)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    decisions, wall_ms, cpu_ms = route_each(router, [row["prompt"] for row in rows])
    report = {"scoring": router.scoring, **metrics(rows, decisions, wall_ms, cpu_ms, args.worst)}
    print(json.dumps(report) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
