"""The fitted-parameters file written by `python -m routing.calibrate` and read by the router.

A JSON object: `scoring` (centroid|max|topk|logreg), `k`, per-intent `thresholds`, for
`logreg` a `classifier` ({classes, coef, intercept}), the `routes_fingerprint` of the
routes file it was fitted with, and a `fit` report kept for people (never read back).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from routing.intents import RouteTable
from routing.router import SCORINGS, LinearClassifier, Router

PARAMS_FILE = Path(__file__).resolve().parent / "params.json"
FORMAT_VERSION = 1

log = logging.getLogger(__name__)


def params_path(configured: str = "") -> Path:
    """The parameters file: `configured` (the ROUTING_PARAMS_FILE setting) if set, else routing/params.json."""
    return Path(configured.strip() or PARAMS_FILE)


@dataclass(frozen=True)
class RouterParams:
    """What calibration fitted: the scoring, its thresholds and, for `logreg`, the classifier."""

    scoring: str
    thresholds: dict[str, float]
    k: int = 3
    classifier: Optional[LinearClassifier] = None
    routes_fingerprint: Optional[str] = None
    fit: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        data = {"version": FORMAT_VERSION, "scoring": self.scoring, "k": self.k,
                "thresholds": {name: round(value, 6) for name, value in self.thresholds.items()},
                "routes_fingerprint": self.routes_fingerprint}
        if self.classifier is not None:
            data["classifier"] = {"type": "logistic_regression", "classes": list(self.classifier.classes),
                                  "coef": np.round(self.classifier.coef, 7).tolist(),
                                  "intercept": np.round(self.classifier.intercept, 7).tolist()}
        data["fit"] = self.fit
        return data


def parse_params(data: dict) -> RouterParams:
    """Validate a decoded parameters file; raise ValueError saying what is wrong."""
    if not isinstance(data, dict):
        raise ValueError("parameters file must hold a JSON object")
    if data.get("version") != FORMAT_VERSION:
        raise ValueError(f"parameters file version must be {FORMAT_VERSION}, not {data.get('version')!r}")
    scoring = data.get("scoring")
    if scoring not in SCORINGS:
        raise ValueError(f"scoring must be one of {SCORINGS}, not {scoring!r}")
    k = data.get("k", 3)
    if not isinstance(k, int) or k < 1:
        raise ValueError("k must be a positive integer")
    thresholds = data.get("thresholds")
    if not isinstance(thresholds, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in thresholds.values()):
        raise ValueError("thresholds must map intent names to numbers")
    classifier = _parse_classifier(data["classifier"]) if data.get("classifier") is not None else None
    if scoring == "logreg" and classifier is None:
        raise ValueError("scoring 'logreg' needs a 'classifier'")
    return RouterParams(scoring, {k_: float(v) for k_, v in thresholds.items()}, k, classifier,
                        data.get("routes_fingerprint"), data.get("fit") or {})


def _parse_classifier(raw: dict) -> LinearClassifier:
    try:
        classes = tuple(raw["classes"])
        coef = np.asarray(raw["coef"], dtype=np.float32)
        intercept = np.asarray(raw["intercept"], dtype=np.float32)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"classifier needs classes, coef and intercept ({exc})") from None
    if coef.ndim != 2 or coef.shape[0] != len(classes) or intercept.shape != (len(classes),):
        raise ValueError(f"classifier shapes do not fit {len(classes)} classes: coef {coef.shape}, "
                         f"intercept {intercept.shape}")
    if not np.isfinite(coef).all() or not np.isfinite(intercept).all():
        raise ValueError("classifier weights must be finite numbers")
    return LinearClassifier(classes, coef, intercept)


def load_params(path: Path | str) -> Optional[RouterParams]:
    """Read and validate a parameters file; None if there is none."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None
    return parse_params(data)


def write_params(params: RouterParams, path: Path | str) -> None:
    """Write atomically, so a live router never reads half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(params.to_json(), indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def build_router(table: RouteTable, params: Optional[RouterParams],
                 encode: Callable[[Sequence[str]], np.ndarray]) -> Router:
    """The router for a routes table and (optionally) fitted parameters; ValueError if they do not fit together."""
    if params is None:
        return Router(table, encode)
    if params.routes_fingerprint and params.routes_fingerprint != table.fingerprint():
        log.warning("routing parameters were fitted on another version of the routes file; "
                    "rerun `python -m routing.calibrate` to refit them")
    return Router(table.with_thresholds(params.thresholds), encode, scoring=params.scoring, k=params.k,
                  classifier=params.classifier)
