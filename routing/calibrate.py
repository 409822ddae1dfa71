"""Fit the router to labelled prompts: `python -m routing.calibrate --data FILE [--holdout FILE] [--feedback]`.

Measures every scoring (centroid, max, topk similarity, and logistic regression over the
MiniLM embeddings trained on the routes file's utterances plus the labelled prompts),
fits each one's thresholds for the best accuracy with large-tier recall at or above the
target, keeps the best, writes it to the parameters file the router loads, and reports
before and after on the held-out prompts (`--holdout`, else a deterministic 40% of --data).

`--feedback` also learns from the feedback users gave on jobs (SQL, `DATABASE_URL`), turned into
labelled rows (routing.feedback) that train the classifier; thresholds stay fitted on --data. Without
--data it refits the bundled dev file, held out on the bundled test file.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from sqlalchemy.exc import SQLAlchemyError

from routing.evaluate import metrics
from routing.feedback import assign_intents, drop_prompts, feedback_rows, read_feedback, without_intents
from routing.intents import RouteTable, load_route_table
from routing.labelled import load_labelled, split_dev_test
from routing.live import configured_files
from routing.params import RouterParams, build_router, write_params
from routing.router import SIMILARITY_SCORINGS, LinearClassifier, Router, routed_large
from settings import get_settings

DATA_DIR = Path(__file__).resolve().parent / "data"
MIN_LARGE_RECALL = 0.95
LOGREG_C = (1.0, 4.0, 16.0)
FOLDS = 5
MAX_CANDIDATE_THRESHOLDS = 100


@dataclass
class Candidate:
    """One scoring with its thresholds fitted on the dev prompts."""

    name: str
    params: RouterParams
    small_threshold: float
    large_threshold: float
    accuracy: float
    large_recall: float
    small_recall: float

    def summary(self) -> dict:
        return {"name": self.name, "accuracy": self.accuracy, "large_recall": self.large_recall,
                "small_recall": self.small_recall, "small_threshold": self.small_threshold,
                "large_threshold": self.large_threshold}


def fit_thresholds(scores: np.ndarray, is_large: np.ndarray, large_intents: np.ndarray, default_large: bool,
                   min_large_recall: float) -> tuple[float, float, tuple[float, float, float]]:
    """One threshold for small-tier intents and one (not lower) for large-tier intents.

    Best dev accuracy with large recall >= min_large_recall (or, if unreachable, the best
    large recall); ties go to the safer side: higher small threshold, then lower large one.
    With equal thresholds the rule is simply "the top intent decides if it is confident
    enough, else the default tier", which keeps explanations easy to read.
    """
    candidates = _threshold_candidates(scores.max(axis=1))
    best_key, best = None, None
    for small in candidates:
        for large in candidates[candidates >= small]:
            thresholds = np.where(large_intents, large, small)
            routed = routed_large(scores, thresholds, large_intents, default_large)
            accuracy, large_recall, small_recall = _tier_metrics(routed, is_large)
            key = (large_recall >= min_large_recall, accuracy if large_recall >= min_large_recall else large_recall,
                   large_recall, small, -large)
            if best_key is None or key > best_key:
                best_key, best = key, (float(small), float(large), (accuracy, large_recall, small_recall))
    return best


def _threshold_candidates(top_scores: np.ndarray) -> np.ndarray:
    """Midpoints between neighbouring observed top scores, plus one below and one above them all."""
    values = np.unique(np.round(top_scores, 6))
    if len(values) > MAX_CANDIDATE_THRESHOLDS:
        values = np.unique(np.quantile(values, np.linspace(0, 1, MAX_CANDIDATE_THRESHOLDS)))
    middles = (values[:-1] + values[1:]) / 2
    return np.round(np.concatenate([[values[0] - 0.01], middles, [values[-1] + 0.01]]), 6)


def _tier_metrics(routed_large_: np.ndarray, is_large: np.ndarray) -> tuple[float, float, float]:
    accuracy = float((routed_large_ == is_large).mean())
    large_recall = float((routed_large_ & is_large).sum() / max(is_large.sum(), 1))
    small_recall = float((~routed_large_ & ~is_large).sum() / max((~is_large).sum(), 1))
    return round(accuracy, 4), round(large_recall, 4), round(small_recall, 4)


class _Fitter:
    """Holds the dev prompts' embeddings and labels while candidates are fitted.

    `extra` rows (feedback, each with an intent) are more training examples for the classifier, in every
    fold; thresholds are fitted on the dev prompts alone.
    """

    def __init__(self, table: RouteTable, encode: Callable, dev: list[dict], dev_vectors: np.ndarray,
                 min_large_recall: float, extra: Sequence[dict] = (),
                 extra_vectors: Optional[np.ndarray] = None) -> None:
        self.table, self.encode, self.dev, self.dev_vectors = table, encode, dev, dev_vectors
        self.extra = list(extra)
        self.extra_vectors = extra_vectors if extra_vectors is not None else dev_vectors[:0]
        self.min_large_recall = min_large_recall
        self.names = [intent.name for intent in table.intents]
        self.large_intents = np.array([intent.tier == "large" for intent in table.intents])
        self.is_large = np.array([row["tier"] == "large" for row in dev])

    def candidate(self, name: str, scoring: str, scores: np.ndarray,
                  classifier: Optional[LinearClassifier] = None) -> Candidate:
        small, large, (accuracy, large_recall, small_recall) = fit_thresholds(
            scores, self.is_large, self.large_intents, self.table.default_tier == "large", self.min_large_recall)
        thresholds = {i.name: (large if i.tier == "large" else small) for i in self.table.intents}
        params = RouterParams(scoring, thresholds, classifier=classifier, routes_fingerprint=self.table.fingerprint())
        return Candidate(name, params, small, large, accuracy, large_recall, small_recall)

    def similarity(self, scoring: str) -> Candidate:
        router = Router(self.table, self.encode, scoring=scoring)
        return self.candidate(scoring, scoring, router.score_matrix(self.dev_vectors))

    def logreg(self, c: float) -> Candidate:
        """Thresholds are fitted on out-of-fold probabilities: in-sample ones are overconfident."""
        labelled = np.array([i for i, row in enumerate(self.dev) if row.get("intent") in self.names])
        out_of_fold = self._classifier(c, np.array([], dtype=int)).probabilities(self.dev_vectors)
        if len(labelled) >= 2:
            from sklearn.model_selection import KFold

            for train, held in KFold(min(FOLDS, len(labelled)), shuffle=True, random_state=0).split(labelled):
                fold = self._classifier(c, labelled[train])
                out_of_fold[labelled[held]] = fold.probabilities(self.dev_vectors[labelled[held]])
        final = self._classifier(c, labelled)
        columns = [final.classes.index(name) for name in self.names]
        return self.candidate(f"logreg C={c:g}", "logreg", out_of_fold[:, columns], final)

    def _classifier(self, c: float, rows: np.ndarray) -> LinearClassifier:
        """Multinomial logistic regression on every utterance plus the given dev rows (and the extra rows)."""
        from sklearn.linear_model import LogisticRegression

        intents = self.table.intents
        # per intent, as the similarity scorings ask for them, so the memoised encoder has them already
        x = np.concatenate([self.encode(list(i.utterances)) for i in intents] + [self.dev_vectors[rows.astype(int)],
                                                                                 self.extra_vectors])
        y = ([i.name for i in intents for _ in i.utterances] + [self.dev[r]["intent"] for r in rows]
             + [row["intent"] for row in self.extra])
        model = LogisticRegression(C=c, max_iter=5000).fit(x, y)
        return LinearClassifier(tuple(str(c_) for c_ in model.classes_), model.coef_.astype(np.float32),
                                model.intercept_.astype(np.float32))


def choose(candidates: list[Candidate], min_large_recall: float) -> Candidate:
    """Best accuracy among those meeting the recall target; else the best large recall."""
    return max(candidates, key=lambda c: (c.large_recall >= min_large_recall,
                                          c.accuracy if c.large_recall >= min_large_recall else c.large_recall,
                                          c.large_recall))


def holdout_report(router: Router, rows: list[dict], vectors: np.ndarray) -> dict:
    report = metrics(rows, [router.decide(v) for v in vectors], worst=0)
    return {"scoring": router.scoring, **{k: v for k, v in report.items() if k != "worst"}}


def calibrate(table: RouteTable, dev: list[dict], holdout: list[dict], encode: Callable[[Sequence[str]], np.ndarray],
              before: Optional[Router], min_large_recall: float = MIN_LARGE_RECALL, feedback: Sequence[dict] = (),
              feedback_intents: bool = True) -> dict:
    """Fit every candidate on `dev` (and the `feedback` rows, routing.feedback), choose one, and measure
    before/after on `holdout`.

    Feedback rows without an intent get one of their tier's intents, scored by `before` (the routes
    file's similarity when there is none; routing.feedback.assign_intents), and train the classifier;
    thresholds and the choice of candidate stay fitted on `dev`: feedback is a sample of complaints,
    not of traffic, and must not set the trade-off between the tiers. `feedback_intents=False` keeps
    tier labels only: the rows then join `dev` and move nothing but the thresholds. Feedback on a
    held-out prompt is left out.
    """
    check_intents(table, dev + holdout)
    rows, dropped = drop_prompts(list(feedback), [row["prompt"] for row in holdout])
    vectors = encode([row["prompt"] for row in dev + holdout + rows])
    dev_vectors, holdout_vectors = vectors[:len(dev)], vectors[len(dev):len(dev) + len(holdout)]
    feedback_vectors = vectors[len(dev) + len(holdout):]
    extra, extra_vectors = [], None
    if rows and feedback_intents:
        scorer = before if before is not None else Router(table, encode)
        rows = assign_intents(rows, table, scorer.score_matrix(feedback_vectors))
        extra, extra_vectors = rows, feedback_vectors
    elif rows:
        rows = without_intents(rows)
        dev, dev_vectors = dev + rows, np.concatenate([dev_vectors, feedback_vectors])
    fitter = _Fitter(table, encode, dev, dev_vectors, min_large_recall, extra, extra_vectors)
    candidates = [fitter.similarity(s) for s in SIMILARITY_SCORINGS] + [fitter.logreg(c) for c in LOGREG_C]
    chosen = choose(candidates, min_large_recall)
    after = build_router(table, chosen.params, encode)
    return {
        "chosen": chosen,
        "candidates": [c.summary() for c in candidates],
        "before": holdout_report(before, holdout, holdout_vectors) if before is not None and holdout else None,
        "after": holdout_report(after, holdout, holdout_vectors) if holdout else None,
        "feedback": _feedback_report(rows, dropped, feedback_vectors, before, after, feedback_intents)
        if feedback else None,
    }


def _feedback_report(rows: list[dict], dropped: int, vectors: np.ndarray, before: Optional[Router], after: Router,
                     intents: bool) -> dict:
    """How the feedback rows were used, and how often each router gives them their labelled tier (these
    rows were fitted on: a sanity check, not a measurement)."""
    report = {"rows": len(rows), "dropped_held_out": dropped, "intents": intents,
              "large": sum(row["tier"] == "large" for row in rows)}
    for name, router in (("before", before), ("after", after)):
        if router is not None and rows:
            right = [router.decide(vector).tier == row["tier"] for vector, row in zip(vectors, rows)]
            report[f"accuracy_{name}"] = round(float(np.mean(right)), 4)
    return report


def check_intents(table: RouteTable, rows: list[dict]) -> None:
    """Labelled intents must be the routes file's: the classifier learns those names."""
    unknown = sorted({row["intent"] for row in rows if row.get("intent")} - {i.name for i in table.intents})
    if unknown:
        raise ValueError(f"labelled intents not in the routes file: {unknown}")


def _memoised(encode: Callable[[Sequence[str]], np.ndarray]) -> Callable[[Sequence[str]], np.ndarray]:
    """Each candidate re-reads the utterances; encode each list once."""
    cache: dict[tuple, np.ndarray] = {}

    def cached(texts: Sequence[str]) -> np.ndarray:
        key = tuple(texts)
        if key not in cache:
            cache[key] = encode(list(texts))
        return cache[key]

    return cached


def format_result(result: dict, source: str, n_dev: int, n_holdout: int, target: float) -> str:
    lines = [f"fitted on {n_dev} prompts, held out {n_holdout} ({source}); target: large recall >= {target}",
             "", f"{'candidate (dev)':<16}{'accuracy':>9}{'large rec':>10}{'small rec':>10}  thresholds small / large"]
    for c in result["candidates"]:
        lines.append(f"{c['name']:<16}{c['accuracy']:>9.3f}{c['large_recall']:>10.3f}{c['small_recall']:>10.3f}"
                     f"  {c['small_threshold']:.3f} / {c['large_threshold']:.3f}")
    if result.get("feedback"):
        fb = result["feedback"]
        lines += ["", f"feedback: {fb['rows']} labelled rows ({fb['large']} large), "
                      f"{'with intents for the classifier' if fb['intents'] else 'tier labels only'}; "
                      f"{fb['dropped_held_out']} on held-out prompts left out",
                  f"feedback rows routed to their tier before / after (fitted on, not held out): "
                  f"{_fmt(fb.get('accuracy_before'))} / {_fmt(fb.get('accuracy_after'))}"]
    lines += ["", f"chosen: {result['chosen'].name}", "",
              f"{'held-out':<16}{'before':>8}{'after':>8}"]
    for key in ("accuracy", "large_recall", "small_recall", "small_share", "intent_accuracy"):
        before = (result["before"] or {}).get(key)
        after = (result["after"] or {}).get(key)
        lines.append(f"{key:<16}{_fmt(before):>8}{_fmt(after):>8}")
    return "\n".join(lines)


def _fmt(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m routing.calibrate", description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=None, help="labelled JSON lines to fit on (required without --feedback, "
                                                    "which defaults it to routing/data/dev.jsonl)")
    parser.add_argument("--holdout", default=None, help="labelled JSON lines to report on (default: 40%% of --data; "
                                                       "with --feedback and no --data, routing/data/test.jsonl)")
    parser.add_argument("--feedback", action="store_true",
                        help="also fit on the feedback on jobs in the SQL database (DATABASE_URL)")
    parser.add_argument("--feedback-since", default=None, metavar="YYYY-MM-DD",
                        help="only feedback given (or last replaced) on or after this day (UTC)")
    parser.add_argument("--feedback-tiers-only", action="store_true",
                        help="feedback gives tier labels only (thresholds), no intents for the classifier")
    routes, params = configured_files(get_settings())
    parser.add_argument("--routes", default=str(routes), help="routes file (default: ROUTES_FILE or the bundled one)")
    parser.add_argument("--out", default=str(params), help="parameters file to write (default: ROUTING_PARAMS_FILE "
                                                           "or the bundled one); its current content is the 'before'")
    parser.add_argument("--min-large-recall", type=float, default=MIN_LARGE_RECALL)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = parser.parse_args(argv)
    if args.data is None:
        if not args.feedback:
            parser.error("--data is required (or --feedback, to refit the bundled labelled data plus feedback)")
        args.data, args.holdout = str(DATA_DIR / "dev.jsonl"), args.holdout or str(DATA_DIR / "test.jsonl")

    from routing.embedder import routing_embedder
    from routing.live import load_router

    routes_file, out = Path(args.routes), Path(args.out)
    encode = _memoised(routing_embedder().encode)
    try:
        table = load_route_table(routes_file)
        rows = load_labelled(args.data)
        if args.holdout:
            dev, holdout, source = rows, load_labelled(args.holdout), f"{args.data} / {args.holdout}"
        else:
            (dev, holdout), source = split_dev_test(rows), f"deterministic 60/40 split of {args.data}"
        check_intents(table, dev + holdout)
        feedback, used = [], None
        if args.feedback:
            feedback, used = feedback_rows(read_feedback(get_settings().database(), args.feedback_since), table)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SQLAlchemyError as exc:
        print(f"error: could not read feedback from the database: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    try:
        before = load_router(routes_file, out, encode)
    except ValueError as exc:
        print(f"warning: no 'before': {exc}", file=sys.stderr)
        before = None
    if args.feedback and not feedback:
        print(f"warning: no usable feedback in the database ({used}); fitting the labelled data alone",
              file=sys.stderr)
    result = calibrate(table, dev, holdout, encode, before, args.min_large_recall, feedback,
                       not args.feedback_tiers_only)
    chosen = result["chosen"]
    fit = {"fitted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "data": args.data,
           "holdout": args.holdout or "split of data", "n_dev": len(dev), "n_holdout": len(holdout),
           "min_large_recall": args.min_large_recall, "chosen": chosen.name, "candidates": result["candidates"],
           "holdout_before": result["before"], "holdout_after": result["after"]}
    if args.feedback:
        fit["feedback"] = {**used, **(result["feedback"] or {}), "since": args.feedback_since}
    write_params(replace(chosen.params, fit=fit), out)
    if args.json:
        print(json.dumps({**fit, "out": str(out)}))
    else:
        print(format_result(result, source, len(dev), len(holdout), args.min_large_recall))
        print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
