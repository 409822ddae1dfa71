"""Prometheus exposition (monitoring/prometheus.py): the web app's `GET /metrics` (admin only with keys on),
gunicorn's processes added up in multiprocess mode, importing that builds nothing, each session worker's
own port after a real job, and docs/metrics.md listing exactly the families exposed."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
import requests
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from engines.provider import backend_name
from engines.threaded import ThreadedEngine
from helpers import app_with, free_port, job_store, new_api_key, wait_for_job, web_command
from jobs.queues import QUEUES
from monitoring import prometheus
from settings import get_settings

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "metrics.md"
# | `llm_name` | type | `label`, `label` (or —) | meaning | exposed by |
ROW = re.compile(r"^\|\s*`(llm_[a-z_]+)`\s*\|\s*(counter|gauge|histogram)\s*\|([^|]*)\|([^|]*)\|([^|]*)\|\s*$",
                 re.MULTILINE)


def parse(text: str) -> dict[tuple[str, frozenset], float]:
    """(sample name, labels) -> value of an exposition."""
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: dict, after: dict, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def declared(text: str) -> dict[str, str]:
    """Family name -> type, from the exposition's TYPE lines."""
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE))


def scrape(client) -> tuple[str, dict]:
    response = client.get("/metrics")
    assert response.status_code == 200, response.get_data(as_text=True)
    text = response.get_data(as_text=True)
    return text, parse(text)


def label_values(samples: dict, name: str, label: str) -> dict[str, float]:
    return {dict(labels)[label]: v for (sample, labels), v in samples.items() if sample == name}


# --- The web app ------------------------------------------------------------------------------------------------

def test_the_web_app_exposes_its_http_families(client):
    _, before = scrape(client)
    for _ in range(3):
        assert client.get("/health").status_code == 200
    job_id = uuid.uuid4().hex
    assert client.get(f"/v1/jobs/{job_id}").status_code == 404
    assert client.get("/no/such/path").status_code == 404
    assert client.open("/health", method="BREW").status_code == 405
    response = client.get("/metrics")
    assert response.mimetype == "text/plain"
    text, after = scrape(client)

    assert delta(before, after, "llm_http_requests_total", route="/health", method="GET", status="200") == 3
    assert delta(before, after, "llm_http_requests_total", route="/v1/jobs/<job_id>", method="GET", status="404") == 1
    assert delta(before, after, "llm_http_requests_total", route="unmatched", method="GET", status="404") == 1
    assert delta(before, after, "llm_http_requests_total", route="unmatched", method="other", status="405") == 1
    assert value(after, "llm_http_requests_total", route="/metrics", method="GET", status="200") >= 2
    assert job_id not in text, "a job id became a label value"

    labels = {"route": "/health", "method": "GET"}
    assert delta(before, after, "llm_http_request_duration_seconds_count", **labels) == 3
    assert 0 < delta(before, after, "llm_http_request_duration_seconds_sum", **labels) < 3
    buckets = sorted((float(dict(key)["le"]), v) for (name, key), v in after.items()
                     if name == "llm_http_request_duration_seconds_bucket" and dict(key).items() >= labels.items())
    counts = [v for _, v in buckets]
    assert counts == sorted(counts) and buckets[-1] == (float("inf"), value(
        after, "llm_http_request_duration_seconds_count", **labels))


def test_the_web_app_reads_worker_presence_and_redis_at_each_scrape(client):
    from jobs.presence import beat, leave
    from helpers import job_store

    redis = job_store().redis
    before = label_values(scrape(client)[1], "llm_workers_live", "queue")
    beat(redis, "scrape-test@host", {"routing"}, set(), get_settings().worker_heartbeat_s)
    try:
        _, samples = scrape(client)
    finally:
        leave(redis, "scrape-test@host", {"routing"})
    assert value(samples, "llm_redis_up") == 1
    live = label_values(samples, "llm_workers_live", "queue")
    assert set(live) == set(QUEUES) and live["routing"] == before["routing"] + 1, "read at each scrape"


def test_redis_down_reads_as_redis_up_0():
    app = app_with(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    _, samples = scrape(app.test_client())
    assert value(samples, "llm_redis_up") == 0
    assert not label_values(samples, "llm_workers_live", "queue"), "worker presence is unknown without Redis"


def test_an_exact_hit_counts_its_cache_lookup(app, client):
    from cache.entries import entry_from_result
    from webapp.context import web
    from webapp.schemas import JobRequestSchema

    body = {"prompt": f"metrics exact hit {uuid.uuid4().hex[:8]}", "max_tokens": 4, "tier": "small"}
    result = {"response": "Hi.", "model_used": "m", "tier": "small", "intent": "chitchat", "score": 0.9,
              "routing": {"intent": "chitchat", "tier": "small", "score": 0.9}, "tokens": 2, "finish_reason": "stop"}
    with app.app_context():
        cache = web().exact_cache
        job = JobRequestSchema().load(body)
        cache.index.put(cache.key(job), entry_from_result(job, result))
    try:
        _, before = scrape(client)
        assert client.post("/v1/jobs", json=body).status_code == 200
        _, after = scrape(client)
    finally:
        with app.app_context():
            cache.index.remove([cache.key(job)])
    assert delta(before, after, "llm_cache_lookups_total", kind="exact", outcome="hit") == 1
    assert delta(before, after, "llm_http_requests_total", route="/v1/jobs", method="POST", status="200") == 1


def test_metrics_need_an_admin_key_when_keys_are_on():
    client = app_with(api_keys_required=True).test_client()
    refused = client.get("/metrics")
    assert refused.status_code == 401 and refused.get_json()["error"]["code"] == "unauthorized"
    user, _ = new_api_key("metrics-user")
    forbidden = client.get("/metrics", headers={"Authorization": f"Bearer {user}"})
    assert forbidden.status_code == 403 and forbidden.get_json()["error"]["code"] == "forbidden"
    admin, _ = new_api_key("metrics-admin", admin=True)
    allowed = client.get("/metrics", headers={"Authorization": f"Bearer {admin}"})
    assert allowed.status_code == 200 and "# TYPE llm_http_requests_total counter" in allowed.get_data(as_text=True)


def test_the_scraper_chooses_the_format(client):
    response = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.status_code == 200 and response.mimetype == "application/openmetrics-text"
    assert response.get_data(as_text=True).endswith("# EOF\n")


# --- Multiprocess mode ------------------------------------------------------------------------------------------

RECORD = textwrap.dedent("""
    import json, os, sys
    sys.path.insert(0, os.getcwd())
    from monitoring import celery_signals, flask_hooks, prometheus, queues  # noqa: F401
    import webapp  # noqa: F401
    before = sorted(os.listdir(os.environ["PROMETHEUS_MULTIPROC_DIR"]))
    built_on_import = prometheus._recorded is not None
    prometheus.cache_lookup("exact", "hit")
    print(json.dumps({"before": before, "built_on_import": built_on_import,
                      "after": sorted(os.listdir(os.environ["PROMETHEUS_MULTIPROC_DIR"]))}))
""")


def test_importing_builds_nothing_and_processes_add_up(tmp_path):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    reports = []
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", RECORD], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        reports.append(json.loads(done.stdout.strip().splitlines()[-1]))
    assert reports[0]["before"] == [] and not reports[0]["built_on_import"], "importing built families or files"
    assert reports[0]["after"], "recording in multiprocess mode wrote no file"
    read = subprocess.run([sys.executable, "-c", "from monitoring import prometheus; "
                           "print(prometheus.web_exposition(None)[0].decode())"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert read.returncode == 0, read.stderr[-3000:]
    assert value(parse(read.stdout), "llm_cache_lookups_total", kind="exact", outcome="hit") == 2


def test_gunicorn_processes_add_up(artifacts_dir):
    port = free_port()
    command = web_command(port)
    command[command.index("--workers") + 1] = "2"
    multiprocess_dir = Path(command[command.index("--env") + 1].partition("=")[2])
    (multiprocess_dir / "counter_1.db").write_bytes(b"stale")  # an earlier run's file: gone at start
    base = f"http://127.0.0.1:{port}"
    log = open(artifacts_dir / "logs" / "web-prometheus.log", "ab")
    proc = subprocess.Popen(command, cwd=ROOT, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        _wait_for(lambda: _answers(f"{base}/health"), 60, "gunicorn")
        before = parse(requests.get(f"{base}/metrics", timeout=10).text)
        for _ in range(20):
            assert requests.get(f"{base}/health", timeout=10).status_code == 200
        after = parse(requests.get(f"{base}/metrics", timeout=10).text)
        assert delta(before, after, "llm_http_requests_total", route="/health", method="GET", status="200") == 20
        assert "counter_1.db" not in os.listdir(multiprocess_dir)
        assert any(name.startswith("counter_") for name in os.listdir(multiprocess_dir))
        assert value(after, "llm_redis_up") == 1
    finally:
        from conftest import stop_process

        stop_process(proc)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).ok
    except requests.RequestException:
        return False


def _wait_for(condition, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if result := condition():
            return result
        time.sleep(0.2)
    raise AssertionError(f"waited {timeout}s in vain for {what}")


# --- Engines ----------------------------------------------------------------------------------------------------

def test_engine_families_read_the_engines_accessors():
    engine = ThreadedEngine("m", 4, get_settings())  # no model and no thread: an idle engine's figures
    registry = CollectorRegistry()
    registry.register(prometheus.EngineCollector(lambda: {"small": engine, "large": None}))
    samples = parse(generate_latest(registry).decode())
    assert samples == {("llm_engine_batch_width", frozenset({("tier", "small")})): 0.0,
                       ("llm_engine_steps_total", frozenset({("tier", "small")})): 0.0}
    engine.stats.record_step(3)
    assert value(parse(generate_latest(registry).decode()), "llm_engine_steps_total", tier="small") == 1


# --- The documentation ------------------------------------------------------------------------------------------

def documented() -> dict[str, tuple[str, tuple[str, ...]]]:
    rows = ROW.findall(DOC.read_text())
    assert len(rows) > 10, "the family table was not found; did its format change?"
    names = [row[0] for row in rows]
    assert len(names) == len(set(names)), "a family is documented twice"
    for name, _, _, meaning, exposed_by in rows:
        assert meaning.strip() and exposed_by.strip(), f"{name}: meaning and exposing process are required"
    return {name: (kind, tuple(re.findall(r"`([a-z_]+)`", labels))) for name, kind, labels, _, _ in rows}


def test_the_docs_list_exactly_the_families_exposed(client):
    web_text, _ = scrape(client)
    registry = CollectorRegistry()
    registry.register(prometheus.recorded().registry)
    registry.register(prometheus.EngineCollector(dict))
    exposed = {**declared(web_text), **declared(generate_latest(registry).decode())}
    docs = documented()
    assert {name: kind for name, (kind, _) in docs.items()} == exposed
    assert docs == {family.name: (family.kind, family.labels) for family in prometheus.FAMILIES}


# --- The workers (integration layer) ----------------------------------------------------------------------------

def scrape_url(url: str) -> tuple[str, dict]:
    response = requests.get(url, timeout=10)
    response.raise_for_status()
    return response.text, parse(response.text)


def test_each_worker_serves_its_families_after_a_job(client, worker_metrics_urls):
    urls = worker_metrics_urls
    before = {name: scrape_url(url)[1] for name, url in urls.items()}
    # Looked up in the caches (a unique prompt: both miss), so the routing worker decides: a forced job
    # that skips them goes straight to its tier.
    body = {"prompt": f"Say hello to visitor {uuid.uuid4().hex[:8]}.", "max_tokens": 3, "tier": "small"}
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.get_json()
    job_id = response.get_json()["id"]
    view = wait_for_job(client, job_id)
    assert view["status"] == "succeeded", view
    result, intent = view["result"], view["routing"]["intent"]
    # The figures are recorded when the task returns, just after the job record says succeeded.
    small_text, small = _wait_for(lambda: _scraped_when(urls["small"], lambda s: delta(
        before["small"], s, "llm_job_duration_seconds_count", tier="small") >= 1), 30, "the small worker's figures")
    routing_text, routing = scrape_url(urls["routing"])
    large_text, large = scrape_url(urls["large"])

    assert delta(before["small"], small, "llm_jobs_total", tier="small", status="succeeded") == 1
    assert delta(before["small"], small, "llm_tokens_generated_total", tier="small") == result["tokens"] > 0
    assert delta(before["small"], small, "llm_prompt_tokens_total", tier="small") == result["prompt_tokens"] > 0
    for family, field in prometheus.TIMINGS:
        assert delta(before["small"], small, f"{family}_count", tier="small") == 1
        assert delta(before["small"], small, f"{family}_sum", tier="small") == pytest.approx(result[field] / 1000,
                                                                                            abs=0.001)
    assert value(small, "llm_jobs_in_flight", tier="small") == 0
    assert delta(before["small"], small, "llm_engine_steps_total", tier="small") >= result["tokens"]
    assert ("llm_engine_batch_width", frozenset({("tier", "small")})) in small  # exposed, not read as a missing 0
    assert 0 <= value(small, "llm_engine_batch_width", tier="small") <= 4
    if backend_name() == "llamacpp":
        assert 0 < value(small, "llm_engine_kv_cache_usage_ratio", tier="small") <= 1  # the shared prefix stays
    assert not label_values(small, "llm_engine_steps_total", "tier").keys() - {"small"}

    assert delta(before["routing"], routing, "llm_routing_decisions_total", intent=intent, tier="small") == 1
    assert delta(before["routing"], routing, "llm_cache_lookups_total", kind="semantic", outcome="miss") == 1
    assert delta(before["large"], large, "llm_jobs_total", tier="small", status="succeeded") == 0
    for text in (small_text, routing_text, large_text):
        assert job_id not in text and body["prompt"] not in text
        assert "llm_redis_up" not in text, "only the web app checks Redis for Prometheus"


# The router sends this prompt to the large tier (as in tests/test_control.py).
LARGE_PROMPT = ("My Flask app crashes with a KeyError traceback when two requests arrive at once. "
                "Help me debug this race condition.")


def test_cancels_and_fallbacks_are_counted(client, worker_metrics_urls):
    from jobs.presence import live_workers
    from workerctl import job_record, node, paused, queued_messages, submit, wait_until, wait_until_steady

    urls, beat = worker_metrics_urls, get_settings().worker_heartbeat_s
    before = {name: scrape_url(url)[1] for name, url in urls.items()}
    with paused("small", "small-queue"):  # cancelled while it waits in small-queue: the worker skips it
        job_id = submit(client, prompt="Name three colours.", tier="small", max_tokens=4)
        wait_until(lambda: job_record(job_id).get("routing") and queued_messages("small-queue"), 120,
                   "the job to wait in small-queue")
        assert client.delete(f"/v1/jobs/{job_id}").get_json()["status"] == "cancelled"
    _wait_for(lambda: _scraped_when(urls["small"], lambda s: delta(
        before["small"], s, "llm_jobs_total", tier="small", status="cancelled") == 1), 180, "the skipped job's count")

    redis = job_store().redis
    with paused("large", "large-queue"):  # no live large worker: routing moves the job to the small tier
        wait_until_steady(lambda: node("large") not in live_workers(redis, "large-queue", beat)
                          and node("small") in live_workers(redis, "small-queue", beat), 1.5 * beat, 60,
                          "no live worker on the large tier")
        view = wait_for_job(client, submit(client, prompt=LARGE_PROMPT, max_tokens=4), timeout=300)
    assert view["routing"]["fallback"]["reason"] == "no_live_workers", view
    _, routing = scrape_url(urls["routing"])
    assert delta(before["routing"], routing, "llm_fallbacks_total", from_tier="large", to_tier="small",
                 reason="no_live_workers") == 1
    wait_until(lambda: node("large") in live_workers(redis, "large-queue", beat), 60, "the large tier to be live again")


def test_every_worker_samples_the_queue_depths(worker_metrics_urls):
    for name, url in worker_metrics_urls.items():
        _, samples = _wait_for(lambda: _scraped_when(url, lambda s: set(label_values(
            s, "llm_queue_depth", "queue")) == set(QUEUES)), 30, f"{name}'s queue depths")


def test_every_worker_counts_lost_messages_from_zero(worker_metrics_urls):
    # The series exist before the first loss, or LLMLostMessages' increase() could not see that loss.
    for name, url in worker_metrics_urls.items():
        _, samples = scrape_url(url)
        assert set(label_values(samples, "llm_lost_messages_total", "queue")) == set(QUEUES), name


def test_the_served_web_app_exposes_presence(live_server):
    text, samples = scrape_url(f"{live_server}/metrics")
    assert value(samples, "llm_redis_up") == 1
    assert all(value(samples, "llm_workers_live", queue=queue) >= 1 for queue in QUEUES), text
    assert value(samples, "llm_http_requests_total", route="/openapi.json", method="GET", status="200") >= 1


def _scraped_when(url: str, condition):
    text, samples = scrape_url(url)
    return (text, samples) if condition(samples) else None


def test_a_malformed_accept_header_still_gets_the_text_format(client):
    """prometheus_client's encoder choice raises on a bad version: that is the plain format, never a 500."""
    for accept in ("text/plain; version=abc", "application/openmetrics-text; version=x"):
        response = client.get("/metrics", headers={"Accept": accept})
        assert response.status_code == 200 and b"llm_redis_up" in response.data
