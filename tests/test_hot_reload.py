"""Hot reload of the routes and parameters files: in process, and in a real routing worker."""
from __future__ import annotations

import json
import logging
import shutil
import uuid

import pytest

import conftest
from conftest import start_worker, stop_process, wait_for_queues
from helpers import broker, job_store, wait_for_job
from settings import get_settings
from routing.embedder import routing_embedder
from routing.intents import INTENTS_FILE
from routing.live import LiveRouter
from routing.params import PARAMS_FILE
from webapp.schemas import JobRequestSchema

GREETING = "hey there, how's your day going?"
HOT_QUEUE = "routing-hot-reload"


@pytest.fixture(scope="module")
def encode():
    return routing_embedder().encode


@pytest.fixture()
def files(tmp_path):
    """Copies of the shipped routes and parameters files that a test may edit."""
    routes, params = tmp_path / "routes.yaml", tmp_path / "params.json"
    shutil.copy(INTENTS_FILE, routes)
    shutil.copy(PARAMS_FILE, params)
    return routes, params


def _never_small(params_file) -> None:
    """Edit the parameters so no small-tier intent can pass: everything falls back to large."""
    data = json.loads(params_file.read_text())
    small = {"casual", "factual", "code_help"}
    data["thresholds"] = {name: (1.01 if name in small else value) for name, value in data["thresholds"].items()}
    params_file.write_text(json.dumps(data))


def _reload_errors(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "routing.live" and r.levelno == logging.ERROR]


def test_changed_parameters_file_is_picked_up(files, encode):
    routes, params = files
    live = LiveRouter(encode, routes, params)
    before = live.get()
    assert before.route(GREETING)[0].tier == "small"
    assert live.get() is before, "no change, no rebuild"

    _never_small(params)
    decision = live.get().route(GREETING)[0]
    assert live.get() is not before
    assert (decision.tier, decision.rule, decision.intent, decision.threshold) == ("large", "fallback", "casual", 1.01)


def test_changed_routes_file_is_picked_up(files, encode, tmp_path):
    routes, _ = files
    live = LiveRouter(encode, routes, tmp_path / "absent.json")  # no parameters: the routes file's thresholds
    assert live.get().scoring == "topk"
    assert live.get().route(GREETING)[0].tier == "small"

    routes.write_text(routes.read_text().replace("name: casual\n    tier: small", "name: casual\n    tier: large"))
    decision = live.get().route(GREETING)[0]
    assert (decision.intent, decision.tier, decision.rule) == ("casual", "large", "matched")


@pytest.mark.parametrize("which,content,reason", [
    ("params", "{not json", "not valid JSON"),
    ("params", '{"version": 1, "scoring": "sorcery", "thresholds": {}}', "scoring must be one of"),
    ("routes", "intents: [oops", "routes file"),
    ("routes", "default_tier: large\nintents:\n  - name: casual\n    tier: small\n    threshold: 0.5\n"
               "    utterances: [hi]\n", "does not fit routes file"),
])
def test_invalid_file_keeps_the_old_router_and_logs_one_error(files, encode, caplog, which, content, reason):
    routes, params = files
    live = LiveRouter(encode, routes, params)
    good = live.get()
    target = params if which == "params" else routes
    target.write_text(content)
    with caplog.at_level(logging.ERROR, logger="routing.live"):
        for _ in range(3):
            assert live.get() is good
    errors = _reload_errors(caplog)
    assert len(errors) == 1, errors
    assert str(target) in errors[0] and reason in errors[0]
    assert "previous version" in errors[0]

    shutil.copy(PARAMS_FILE if which == "params" else INTENTS_FILE, target)  # fixed: reloads again
    assert live.get() is not good
    assert live.get().route(GREETING)[0].tier == "small"


def test_first_load_of_an_invalid_file_raises(tmp_path, encode):
    bad = tmp_path / "params.json"
    bad.write_text("[]")
    with pytest.raises(ValueError, match="parameters file .*params.json"):
        LiveRouter(encode, INTENTS_FILE, bad).get()


def test_the_worker_router_follows_the_configured_paths(files):
    from tasks.context import WorkerContext

    routes, params = files
    context = WorkerContext.build(get_settings().replace(routes_file=str(routes), routing_params_file=str(params)))
    assert context.router().route(GREETING)[0].tier == "small"
    _never_small(params)
    assert context.router().route(GREETING)[0].rule == "fallback"


def _route_on_queue(client, queue: str, prompt: str) -> dict:
    """Queue a job's routing task on `queue` (as submit_job does for `routing`); its routing explanation."""
    job = JobRequestSchema().load({"prompt": prompt, "max_tokens": 2})
    job_id = uuid.uuid4().hex
    job_store().create(job_id, job)
    broker().celery.send_task("tasks.routing.route", args=[job], task_id=job_id, queue=queue)
    view = wait_for_job(client, job_id)
    assert view["status"] == "succeeded", view
    assert view["result"]["routing"] == view["routing"]
    return view["routing"]


@pytest.mark.usefixtures("workers")
def test_routing_worker_reloads_without_restart(files, client, artifacts_dir, monkeypatch):
    routes, params = files
    log_file = artifacts_dir / "logs" / "routing-hot.log"
    log_start = log_file.stat().st_size if log_file.exists() else 0
    monkeypatch.setitem(conftest.WORKERS, "routing-hot", ["-Q", HOT_QUEUE, "--concurrency", "2"])
    worker = start_worker("routing-hot", artifacts_dir / "logs",
                          extra_env={"ROUTES_FILE": str(routes), "ROUTING_PARAMS_FILE": str(params)})
    try:
        wait_for_queues([HOT_QUEUE])
        assert _route_on_queue(client, HOT_QUEUE, GREETING)["tier"] == "small"

        _never_small(params)
        changed = _route_on_queue(client, HOT_QUEUE, GREETING)
        assert (changed["tier"], changed["rule"], changed["threshold"]) == ("large", "fallback", 1.01)

        params.write_text("{broken")
        kept = _route_on_queue(client, HOT_QUEUE, GREETING)
        assert (kept["tier"], kept["rule"], kept["threshold"]) == ("large", "fallback", 1.01)
    finally:
        stop_process(worker)
    log = log_file.read_bytes()[log_start:].decode(errors="replace")
    assert log.count("routing config not reloaded") == 1, log[-3000:]
    assert f"parameters file {params}: not valid JSON" in log
