"""The evaluation and calibration commands, on the small labelled fixture and the real model."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
from routing import calibrate, evaluate
from routing.calibrate import fit_thresholds
from routing.embedder import routing_embedder
from routing.intents import INTENTS_FILE, load_route_table
from routing.labelled import load_labelled, split_dev_test
from routing.live import load_router
from routing.params import PARAMS_FILE, load_params, parse_params
from routing.router import LinearClassifier, RoutingDecision

FIXTURE = ROOT / "tests" / "fixtures" / "routing_small.jsonl"
JSON_KEYS = {"n", "accuracy", "large_recall", "small_recall", "small_share", "p50_ms", "p99_ms"}


@pytest.fixture()
def small_routes(tmp_path) -> Path:
    """The shipped routes file cut to 6 utterances per intent, so calibration tests run quickly."""
    import yaml

    data = yaml.safe_load(INTENTS_FILE.read_text())
    for intent in data["intents"]:
        intent["utterances"] = intent["utterances"][:6]
    path = tmp_path / "routes.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _decision(tier: str, score: float = 0.5, intent: str = "x") -> RoutingDecision:
    return RoutingDecision(intent, tier, score, 0.4, "matched", [[intent, score]])


def test_metrics_count_each_cell_and_list_costly_misroutes_first():
    rows = [{"prompt": p, "tier": t} for p, t in
            [("a", "large"), ("b", "large"), ("c", "large"), ("d", "small"), ("e", "small")]]
    decisions = [_decision("large"), _decision("small", 0.3), _decision("small", 0.9), _decision("small"),
                 _decision("large", 0.99)]
    report = evaluate.metrics(rows, decisions, wall_ms=[1, 2, 3, 4, 100], cpu_ms=[1, 1, 1, 1, 1])
    assert report["confusion"] == {"small": {"small": 1, "large": 1}, "large": {"small": 2, "large": 1}}
    assert report["accuracy"] == 0.4
    assert report["large_recall"] == round(1 / 3, 4) and report["small_recall"] == 0.5
    assert report["large_precision"] == 0.5 and report["small_precision"] == round(1 / 3, 4)
    assert report["small_share"] == 0.6
    assert report["p50_ms"] == 3
    # large work sent to small costs most: those first, most confident first
    assert [m["prompt"] for m in report["worst"]] == ["c", "b", "e"]
    assert report["worst"][0]["expected"] == "large" and report["worst"][0]["tier"] == "small"


def test_evaluate_json_on_the_fixture():
    """The real command line, as an operator runs it."""
    proc = subprocess.run([sys.executable, "-m", "routing.evaluate", "--data", str(FIXTURE), "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert JSON_KEYS <= set(report)
    assert report["n"] == 24
    assert report["scoring"] == load_params(PARAMS_FILE).scoring
    assert 0 < report["p50_ms"] <= report["p99_ms"]
    confusion = report["confusion"]
    assert sum(sum(row.values()) for row in confusion.values()) == 24
    routed_small = confusion["small"]["small"] + confusion["large"]["small"]
    assert report["small_share"] == round(routed_small / 24, 4)
    assert report["accuracy"] >= 0.75, "the shipped router should get most of these easy prompts right"


def test_evaluate_text_report_names_every_section(capsys):
    assert evaluate.main(["--data", str(FIXTURE), "--worst", "3"]) == 0
    out = capsys.readouterr().out
    for part in ("accuracy", "small  precision", "large  precision", "routed to small", "latency", "p50", "p99",
                 "confusion", "worst misroutes"):
        assert part in out


def test_evaluate_refuses_a_bad_data_file(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "hi", "tier": "medium"}\n')
    assert evaluate.main(["--data", str(bad)]) == 2
    assert "tier" in capsys.readouterr().err


def test_labelled_split_reproduces_the_shipped_dev_and_test_files():
    data = ROOT / "routing" / "data"
    dev, test = split_dev_test(load_labelled(data / "labelled.jsonl"))
    assert _prompts(dev) == _prompts(load_labelled(data / "dev.jsonl"))
    assert _prompts(test) == _prompts(load_labelled(data / "test.jsonl"))


def _prompts(rows: list[dict]) -> list[str]:
    return sorted(row["prompt"] for row in rows)


def test_fit_thresholds_keeps_large_recall_and_breaks_ties_to_the_safe_side():
    # intents: 0 small, 1 large; each row's score for its top intent
    scores = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.55, 0.45], [0.2, 0.8], [0.1, 0.9]])
    is_large = np.array([False, False, True, False, True, True])
    small, large, (accuracy, large_recall, _) = fit_thresholds(
        scores, is_large, np.array([False, True]), True, min_large_recall=1.0)
    assert large_recall == 1.0
    assert accuracy == round(5 / 6, 4)  # 0.55 must go large to keep 0.6 (large) there
    assert 0.6 < small < 0.8, "the threshold sits in the gap, at its safe (upper) middle"


def test_linear_classifier_matches_scikit_learn():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5)).astype(np.float32)
    y = np.array(["a", "b", "c"])[rng.integers(0, 3, 60)]
    model = LogisticRegression(C=2.0, max_iter=2000).fit(x, y)
    ours = LinearClassifier(tuple(model.classes_), model.coef_, model.intercept_)
    np.testing.assert_allclose(ours.probabilities(x), model.predict_proba(x), atol=1e-5)


def test_calibrate_on_the_fixture_writes_parameters_the_router_loads(tmp_path, capsys, small_routes):
    out = tmp_path / "params.json"
    args = ["--data", str(FIXTURE), "--routes", str(small_routes), "--out", str(out), "--json"]
    assert calibrate.main(args) == 0
    report = json.loads(capsys.readouterr().out)
    names = [c["name"] for c in report["candidates"]]
    assert {"centroid", "max", "topk"} <= set(names) and any(n.startswith("logreg") for n in names)
    assert report["chosen"] in names
    assert report["n_dev"] + report["n_holdout"] == 24 and report["n_holdout"] == 8  # 1 of 3 per intent
    assert report["holdout_before"]["scoring"] == "topk"  # no parameters file yet: the routes file alone
    assert {"accuracy", "large_recall", "small_recall", "small_share"} <= set(report["holdout_after"])

    params = load_params(out)
    table = load_route_table(small_routes)
    assert set(params.thresholds) == {i.name for i in table.intents}
    assert params.routes_fingerprint == table.fingerprint()
    assert json.loads(out.read_text())["fit"]["chosen"] == report["chosen"]
    router = load_router(small_routes, out, routing_embedder().encode)
    assert router.scoring == params.scoring

    # a second run measures the file just written as its "before"
    assert calibrate.main(args) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["holdout_before"] == report["holdout_after"]


def test_calibrate_with_a_holdout_file_reports_before_and_after(tmp_path, capsys, small_routes):
    out = tmp_path / "params.json"
    rows = FIXTURE.read_text().splitlines()
    dev, holdout = tmp_path / "dev.jsonl", tmp_path / "holdout.jsonl"
    dev.write_text("\n".join(rows[::2]) + "\n")
    holdout.write_text("\n".join(rows[1::2]) + "\n")
    assert calibrate.main(["--data", str(dev), "--holdout", str(holdout), "--routes", str(small_routes),
                           "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "fitted on 12 prompts, held out 12" in text
    assert "chosen:" in text and "before" in text and "after" in text
    assert f"wrote {out}" in text
    parse_params(json.loads(out.read_text()))


def test_calibrate_refuses_intents_missing_from_the_routes_file(tmp_path, capsys, small_routes):
    data = tmp_path / "data.jsonl"
    data.write_text('{"prompt": "hi", "tier": "small", "intent": "gossip"}\n'
                    '{"prompt": "solve this", "tier": "large", "intent": "step_by_step"}\n')
    out = tmp_path / "params.json"
    assert calibrate.main(["--data", str(data), "--routes", str(small_routes), "--out", str(out)]) == 2
    assert "gossip" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    "data,message",
    [
        ([], "JSON object"),
        ({"version": 2, "scoring": "topk", "thresholds": {}}, "version"),
        ({"version": 1, "scoring": "magic", "thresholds": {}}, "scoring"),
        ({"version": 1, "scoring": "topk", "thresholds": {"casual": "high"}}, "thresholds"),
        ({"version": 1, "scoring": "logreg", "thresholds": {}}, "classifier"),
        ({"version": 1, "scoring": "logreg", "thresholds": {},
          "classifier": {"classes": ["a", "b"], "coef": [[1.0, 2.0]], "intercept": [0.0, 0.0]}}, "shapes"),
    ],
)
def test_invalid_parameters_are_refused_with_a_reason(data, message):
    with pytest.raises(ValueError, match=message):
        parse_params(data)


def test_shipped_parameters_were_fitted_on_the_shipped_routes_file():
    params = load_params(PARAMS_FILE)
    assert params.routes_fingerprint == load_route_table().fingerprint(), \
        "routes file changed since calibration: rerun python -m routing.calibrate"
    assert Path(params.fit["data"]).name == "dev.jsonl", "tune on the dev split only"
