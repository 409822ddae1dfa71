"""How well the router does on labelled prompts: `python -m routing.evaluate --data FILE [--data FILE2 ...] [--json]`.

Routes every prompt one at a time, as the routing worker does, with the configured
routes and parameters files (or the ones named), and prints, for each data file
separately, accuracy, precision and recall per tier, the confusion matrix, the share
routed to small, latency p50/p99, the worst misroutes and a per-language breakdown
(n, accuracy, small share, p50 per language: a row's `lang`, else `detect_lang`).
Several files are routed by one router and summed up in one table at the end.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from typing import Optional, Sequence

import numpy as np

from routing.intents import TIERS
from routing.labelled import load_labelled
# detect_lang (and LATIN_WORDS, read by routing.data.ood.build from here) live in routing.language
from routing.language import LATIN_WORDS, detect_lang  # noqa: F401
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


def row_lang(row: dict) -> str:
    """A row's language: its `lang` field, else `detect_lang` of its prompt."""
    return row.get("lang") or detect_lang(row["prompt"])


def row_source(row: dict) -> str:
    """A row's source package (its `source` up to the first ':'), or "-" when it names none."""
    return str(row.get("source") or "-").split(":", 1)[0]


def breakdown(rows: list[dict], decisions: list[RoutingDecision], wall_ms: Optional[list[float]],
              key=row_lang) -> dict:
    """Per group (a language by default): n, tier accuracy, share routed to small, latency p50 when timed.
    Largest groups first."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        groups[key(row)].append(i)
    out = {}
    for name, index in sorted(groups.items(), key=lambda item: (-len(item[1]), item[0])):
        expected = np.array([rows[i]["tier"] for i in index])
        routed = np.array([decisions[i].tier for i in index])
        group = {"n": len(index), "accuracy": _share(expected == routed), "small_share": _share(routed == "small")}
        if wall_ms:
            group["p50_ms"] = round(float(np.percentile([wall_ms[i] for i in index], 50)), 2)
        out[name] = group
    return out


def set_report(rows: list[dict], decisions: list[RoutingDecision], wall_ms: Optional[list[float]] = None,
               cpu_ms: Optional[list[float]] = None, worst: int = WORST) -> dict:
    """`metrics` plus the per-language breakdown (`by_lang`) and, when rows name sources, `by_source`."""
    report = metrics(rows, decisions, wall_ms, cpu_ms, worst)
    report["by_lang"] = breakdown(rows, decisions, wall_ms, row_lang)
    if any(row.get("source") for row in rows):
        report["by_source"] = breakdown(rows, decisions, wall_ms, row_source)
    return report


def format_breakdown(report: dict) -> str:
    """The per-language (and per-source) tables of a `set_report`."""
    lines = []
    for title, key in (("by language (a row's lang, else detected)", "by_lang"), ("by source", "by_source")):
        if key not in report:
            continue
        width = max(8, *(len(name) for name in report[key]))
        lines += [title, f"  {'':<{width}} {'n':>5} {'accuracy':>9} {'small':>7} {'p50 ms':>7}"]
        for name, group in report[key].items():
            p50 = f"{group['p50_ms']:>7.1f}" if "p50_ms" in group else f"{'':>7}"
            lines.append(f"  {name:<{width}} {group['n']:>5} {group['accuracy']:>9.3f} "
                         f"{group['small_share']:>7.1%} {p50}")
        lines.append("")
    return "\n".join(lines).rstrip()


def format_summary(reports: list[dict]) -> str:
    """One line per evaluated set."""
    width = max(4, *(len(r["data"]) for r in reports))
    lines = ["summary", f"  {'set':<{width}} {'n':>5} {'accuracy':>9} {'small':>7} {'p50 ms':>7}"]
    for r in reports:
        p50 = f"{r['p50_ms']:>7.1f}" if "p50_ms" in r else f"{'':>7}"
        lines.append(f"  {r['data']:<{width}} {r['n']:>5} {r['accuracy']:>9.3f} {r['small_share']:>7.1%} {p50}")
    return "\n".join(lines)


def _share(mask: np.ndarray) -> float:
    return round(float(mask.mean()), 4) if mask.size else 0.0


def _ratio(hits: int, total: int) -> Optional[float]:
    return round(hits / total, 4) if total else None


def _fmt(value: Optional[float]) -> str:
    return "  n/a" if value is None else f"{value:.3f}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m routing.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, action="append",
                        help="labelled JSON lines: prompt, tier, intent, lang, source (all but the first two "
                             "optional); repeat for several sets, each reported separately")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object instead of text (one set: its report; several: "
                             '{"scoring", "sets": [report, ...]})')
    routes, params = configured_files(get_settings())
    parser.add_argument("--routes", default=str(routes), help="routes file (default: ROUTES_FILE or the bundled one)")
    parser.add_argument("--params", default=str(params),
                        help="parameters file (default: ROUTING_PARAMS_FILE or the bundled one)")
    parser.add_argument("--worst", type=int, default=WORST, help="how many misroutes to list")
    args = parser.parse_args(argv)

    from routing.embedder import routing_embedder
    from routing.live import load_router

    try:
        sets = [(path, load_labelled(path)) for path in args.data]
        router = load_router(args.routes, args.params, routing_embedder().encode)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    reports = []
    for path, rows in sets:
        decisions, wall_ms, cpu_ms = route_each(router, [row["prompt"] for row in rows])
        reports.append({"data": str(path), "scoring": router.scoring,
                        **set_report(rows, decisions, wall_ms, cpu_ms, args.worst)})
    if args.json:
        print(json.dumps(reports[0] if len(reports) == 1 else {"scoring": router.scoring, "sets": reports}))
    else:
        print("\n\n".join(f"== {r['data']} ==\n{format_report(r)}\n\n{format_breakdown(r)}" for r in reports))
        if len(reports) > 1:
            print("\n" + format_summary(reports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
