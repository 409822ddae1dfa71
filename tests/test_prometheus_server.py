"""Debian's Prometheus against the platform (docs/alerts.md).

Fast layer: promtool checks deploy/prometheus.yml and deploy/alerts.yml and runs the alert rules' unit
tests (tests/fixtures/alerts_test.yml). Slow layer: a real `prometheus` process scrapes the test web
app's GET /metrics and each test worker's METRICS_PORT, evaluates deploy/alerts.yml, and is asked
through its HTTP API whether the families arrived with sane values. The binaries come from Debian's
`prometheus` package (`make prometheus`, a prerequisite of `make test`, installs it as root); without
them these tests are skipped.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
import yaml

from helpers import free_port

ROOT = Path(__file__).resolve().parent.parent
CONFIG, RULES = ROOT / "deploy" / "prometheus.yml", ROOT / "deploy" / "alerts.yml"
RULE_TESTS = ROOT / "tests" / "fixtures" / "alerts_test.yml"
PROMETHEUS, PROMTOOL = shutil.which("prometheus"), shutil.which("promtool")
NOT_INSTALLED = "{} is not installed (Debian's prometheus package; `make test` installs it when run as root)"
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason=NOT_INSTALLED.format("promtool"))
needs_prometheus = pytest.mark.skipif(PROMETHEUS is None, reason=NOT_INSTALLED.format("prometheus"))

ALERTS = {"LLMScrapeTargetDown", "LLMNoLiveWorker", "LLMQueueNearBackpressureLimit", "LLMSlowFirstToken",
          "LLMHighErrorRatio", "LLMRedisDown", "LLMEngineStalled", "LLMLostMessages"}
QUEUES = {"routing", "small-queue", "large-queue"}
TIERS = {"small", "large"}
# The scrape jobs of a `make run` host: the web app on PORT, each worker on its METRICS_PORT.
MAKE_RUN_TARGETS = {"web": "127.0.0.1:8000", "routing": "127.0.0.1:9101", "small": "127.0.0.1:9102",
                    "large": "127.0.0.1:9103"}
PLATFORM_JOBS = ("web", "routing", "small", "large")
DOWN_JOB = "nothing-listens"  # a target of the test Prometheus that never answers
SUPERVISOR_PROGRAMS = {"routing": "routing", "small": "small", "large": "large"}


def promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


# --- fast layer: the files ---------------------------------------------------------------------------


def test_every_alert_rule_has_a_severity_a_summary_and_a_description():
    found = rules()
    assert {rule["alert"] for rule in found} == ALERTS and len(found) == len(ALERTS)
    for rule in found:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"].strip() and rule["annotations"]["description"].strip(), rule["alert"]


def test_the_thresholds_are_the_documented_ones():
    by_name = {rule["alert"]: rule for rule in rules()}
    assert re.search(r"llm_workers_live\) == 0$", by_name["LLMNoLiveWorker"]["expr"])
    assert by_name["LLMNoLiveWorker"]["for"] == "1m"
    assert by_name["LLMQueueNearBackpressureLimit"]["expr"].endswith("> 0.8 * 100")
    assert "QUEUE_MAX_DEPTH" in by_name["LLMQueueNearBackpressureLimit"]["annotations"]["description"]
    assert by_name["LLMSlowFirstToken"]["expr"].startswith("histogram_quantile(0.95, sum by (le, tier)")
    assert by_name["LLMSlowFirstToken"]["expr"].endswith("> 10")
    assert by_name["LLMHighErrorRatio"]["expr"].endswith("> 0.05") and by_name["LLMHighErrorRatio"]["for"] == "5m"
    assert by_name["LLMRedisDown"]["for"] == "30s"
    assert "rate(llm_engine_steps_total[1m])" in by_name["LLMEngineStalled"]["expr"]
    assert by_name["LLMScrapeTargetDown"]["expr"] == "up == 0"


def test_the_scrape_config_covers_a_make_run_host():
    config = yaml.safe_load(CONFIG.read_text())
    assert config["global"]["scrape_interval"] == "5s"
    assert config["rule_files"] == ["alerts.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == set(MAKE_RUN_TARGETS)
    assert jobs["web"]["metrics_path"] == "/metrics"
    for name, target in MAKE_RUN_TARGETS.items():
        (static,) = jobs[name]["static_configs"]
        assert static["targets"] == [target]
        # Target labels must not clash with the families' own labels (they would become exported_<name>).
        assert not {"queue", "tier", "route", "status", "pid"} & set(static.get("labels", {}))
    assert "credentials_file" in CONFIG.read_text(), "the commented example for API_KEYS_REQUIRED=1"


def test_the_worker_ports_are_those_supervisord_gives():
    """deploy/supervisord.conf gives each worker the METRICS_PORT that deploy/prometheus.yml scrapes."""
    text = (ROOT / "deploy" / "supervisord.conf").read_text()
    for job, program in SUPERVISOR_PROGRAMS.items():
        section = re.search(rf"^\[program:{program}\]\n(.*?)(?=^\[|\Z)", text, re.S | re.M).group(1)
        port = re.search(r'METRICS_PORT="?(\d+)', section)
        assert port, f"[program:{program}] sets no METRICS_PORT"
        assert MAKE_RUN_TARGETS[job] == f"127.0.0.1:{port.group(1)}"


@needs_promtool
def test_promtool_accepts_the_alert_rules():
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in checked.stdout


@needs_promtool
def test_the_alert_rules_pass_their_unit_tests():
    """No live worker, Redis down, queue near its limit, a stalled engine, a target down, errors, slow first tokens."""
    tested = promtool("test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


@needs_promtool
def test_promtool_accepts_the_scrape_config_with_its_key_file_example(tmp_path):
    """A copy (next to a copy of the rules it names) with the commented `authorization` block switched on."""
    key_file = tmp_path / "llm-admin-key"
    key_file.write_text("an-admin-key\n")
    commented = ("    # authorization:\n    #   type: Bearer\n"
                 "    #   credentials_file: /etc/prometheus/llm-admin-key\n")
    text = CONFIG.read_text()
    assert commented in text
    (tmp_path / "prometheus.yml").write_text(text.replace(commented, commented.replace("# ", "").replace(
        "/etc/prometheus/llm-admin-key", str(key_file))))
    shutil.copy(RULES, tmp_path / "alerts.yml")
    checked = promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 1 rule files found" in checked.stdout
    config = yaml.safe_load((tmp_path / "prometheus.yml").read_text())
    web = next(job for job in config["scrape_configs"] if job["job_name"] == "web")
    assert web["authorization"] == {"type": "Bearer", "credentials_file": str(key_file)}


# --- slow layer: a real Prometheus ---------------------------------------------------------------------


def eventually(check, what: str, timeout: float = 60, interval: float = 0.5):
    """check()'s value once it stops failing (AssertionError, HTTP errors); fails after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except (AssertionError, requests.RequestException) as error:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not so after {timeout}s: {error!r}") from error
        time.sleep(interval)


class PrometheusAPI:
    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str, **params) -> dict:
        response = requests.get(f"{self.url}{path}", params=params, timeout=10)
        response.raise_for_status()
        body = response.json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[tuple[dict, float]]:
        """An instant vector: (labels, value) per series."""
        data = self.get("/api/v1/query", query=expr)
        assert data["resultType"] == "vector", data
        return [(series["metric"], float(series["value"][1])) for series in data["result"]]

    def by(self, label: str, expr: str) -> dict[str, float]:
        values = {}
        for labels, value in self.query(expr):
            assert labels[label] not in values, f"{expr}: two series for {label}={labels[label]}"
            values[labels[label]] = value
        return values


def scrape_config(endpoints: dict[str, str]) -> dict:
    """deploy/prometheus.yml's shape for the test stack: one job per endpoint URL, every second."""
    def job(name: str, url: str) -> dict:
        parts = urlsplit(url)
        return {"job_name": name, "metrics_path": parts.path or "/metrics",
                "static_configs": [{"targets": [parts.netloc]}]}

    return {"global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)], "scrape_configs": [job(name, url) for name, url in endpoints.items()]}


@pytest.fixture(scope="module")
def prometheus(live_server, worker_metrics_urls, artifacts_dir, tmp_path_factory):
    """A real prometheus (Debian's) on a free port scraping the live server and the workers every second."""
    if PROMETHEUS is None:
        pytest.skip(NOT_INSTALLED.format("prometheus"))
    from bench.stack import stop_process

    home = tmp_path_factory.mktemp("prometheus")
    config = home / "prometheus.yml"
    # One more target where nothing listens: the target-down rule must see it (and only it).
    endpoints = {"web": f"{live_server}/metrics", **worker_metrics_urls,
                 DOWN_JOB: f"http://127.0.0.1:{free_port()}/metrics"}
    config.write_text(yaml.safe_dump(scrape_config(endpoints)))
    port = free_port()
    log_path = artifacts_dir / "logs" / "prometheus.log"
    cmd = [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={home / 'data'}",
           f"--web.listen-address=127.0.0.1:{port}", "--log.level=info"]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, cwd=home, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        def ready() -> None:
            assert proc.poll() is None, f"prometheus exited with {proc.returncode}; see {log_path}"
            assert requests.get(f"{url}/-/ready", timeout=2).status_code == 200

        eventually(ready, "prometheus is ready", timeout=60, interval=0.2)
        yield PrometheusAPI(url)
    finally:
        stop_process(proc, 20)  # SIGTERM to its process group, SIGKILL after 20 s


@pytest.fixture(scope="module")
def answered(live_server, prometheus) -> list[dict]:
    """Two jobs per tier through POST /generate (fresh prompts, caches skipped): their results."""
    results = []
    for tier in sorted(TIERS):
        for n in range(2):
            body = {"prompt": f"Say hi to {uuid.uuid4().hex[:8]} ({n})", "max_tokens": 4, "tier": tier,
                    "cache": False}
            response = requests.post(f"{live_server}/generate", json=body, timeout=240)
            assert response.status_code == 200, response.text
            results.append(response.json())
    assert {result["tier"] for result in results} == TIERS
    return results


@needs_prometheus
def test_prometheus_scrapes_the_web_app_and_every_worker(prometheus):
    def every_target_up() -> None:
        up = prometheus.by("job", "up")
        assert up == {**dict.fromkeys(PLATFORM_JOBS, 1), DOWN_JOB: 0}, up

    eventually(every_target_up, "up == 1 for the web app and every worker (0 for the target where nothing listens)")
    targets = prometheus.get("/api/v1/targets", state="active")["activeTargets"]
    health = {target["labels"]["job"]: target["health"] for target in targets}
    assert health == {**dict.fromkeys(PLATFORM_JOBS, "up"), DOWN_JOB: "down"}, health


@needs_prometheus
def test_jobs_arrive_as_sane_values(prometheus, answered):
    tokens = {tier: sum(r["tokens"] for r in answered if r["tier"] == tier) for tier in TIERS}
    jobs = {tier: sum(1 for r in answered if r["tier"] == tier) for tier in TIERS}

    def requests_counted() -> None:
        served = prometheus.query('sum(llm_http_requests_total{route="/generate", method="POST", status="200"})')
        assert served and served[0][1] >= len(answered), served

    def tokens_counted() -> None:
        counted = prometheus.by("tier", "sum by (tier) (llm_tokens_generated_total)")
        for tier in TIERS:
            assert counted.get(tier, 0) > 0 and counted[tier] >= tokens[tier], (counted, tokens)

    def durations_counted() -> None:
        count = prometheus.by("tier", "sum by (tier) (llm_job_duration_seconds_count)")
        total = prometheus.by("tier", "sum by (tier) (llm_job_duration_seconds_sum)")
        for tier in TIERS:
            assert count.get(tier, 0) >= jobs[tier], count
            assert 0 < total[tier] / count[tier] < 240, (total, count)  # seconds, not milliseconds
        first_token = prometheus.by("tier", "sum by (tier) (llm_job_first_token_seconds_count)")
        assert all(first_token.get(tier, 0) >= jobs[tier] for tier in TIERS), first_token

    def succeeded_counted() -> None:
        succeeded = prometheus.by("tier", 'sum by (tier) (llm_jobs_total{status="succeeded"})')
        assert all(succeeded.get(tier, 0) >= jobs[tier] for tier in TIERS), succeeded

    eventually(requests_counted, "llm_http_requests_total counts the /generate requests")
    eventually(tokens_counted, "llm_tokens_generated_total counts the jobs' tokens")
    eventually(durations_counted, "llm_job_duration_seconds and llm_job_first_token_seconds observed the jobs")
    eventually(succeeded_counted, "llm_jobs_total counts the succeeded jobs")


@needs_prometheus
def test_queues_workers_and_redis_arrive(prometheus):
    def queues_and_workers() -> None:
        depth = prometheus.by("queue", "max by (queue) (llm_queue_depth)")
        assert set(depth) == QUEUES and all(0 <= d <= 100 for d in depth.values()), depth
        live = prometheus.by("queue", "max by (queue) (llm_workers_live)")
        assert set(live) == QUEUES and all(n >= 1 for n in live.values()), live
        redis_up = prometheus.query("llm_redis_up")
        assert redis_up and all(value == 1 for _, value in redis_up), redis_up

    eventually(queues_and_workers, "llm_queue_depth, llm_workers_live >= 1 and llm_redis_up == 1")


@needs_prometheus
def test_the_alert_rules_match_the_exposed_labels(prometheus, answered):
    """The aggregations the rules use find the labels they group by: the rules can fire at all."""
    def grouped() -> None:
        assert set(prometheus.by("queue", "max by (queue) (llm_workers_live)")) == QUEUES
        assert set(prometheus.by("queue", "max by (queue) (llm_queue_depth)")) == QUEUES
        quantiles = prometheus.query("histogram_quantile(0.95, sum by (le, tier) "
                                     "(rate(llm_job_first_token_seconds_bucket[5m])))")
        assert TIERS <= {labels["tier"] for labels, _ in quantiles}, quantiles
        # No job failed here: llm_jobs_total has no failed series yet and the ratio is empty (no alert).
        assert "succeeded" in prometheus.by("status", "sum by (status) (llm_jobs_total)")
        ratio = prometheus.query('sum(rate(llm_jobs_total{status="failed"}[5m])) / sum(rate(llm_jobs_total[5m]))')
        assert all(0 <= value <= 1 for _, value in ratio), ratio
        assert prometheus.query("max without (pid) (llm_redis_up)")
        # The stalled-engine rule pairs in-flight jobs and steps of the same worker process and tier.
        key = ("job", "instance", "tier")
        in_flight = {tuple(labels[k] for k in key) for labels, _ in
                     prometheus.query("sum by (job, instance, tier) (llm_jobs_in_flight)")}
        steps = {tuple(labels[k] for k in key): value for labels, value in
                 prometheus.query("sum by (job, instance, tier) (llm_engine_steps_total)")}
        assert {tier for _, _, tier in in_flight} >= TIERS, in_flight
        assert in_flight <= set(steps) and all(steps[k] > 0 for k in in_flight), (in_flight, steps)

    eventually(grouped, "the rules' aggregations over the exposed families")


@needs_prometheus
def test_prometheus_loaded_and_evaluates_the_alert_rules(prometheus):
    def evaluated() -> list[dict]:
        groups = prometheus.get("/api/v1/rules", type="alert")["groups"]
        loaded = [rule for group in groups for rule in group["rules"]]
        assert {rule["name"] for rule in loaded} == ALERTS, loaded
        assert all(rule["health"] == "ok" for rule in loaded), [(r["name"], r["health"], r.get("lastError"))
                                                                for r in loaded]
        return loaded

    loaded = eventually(evaluated, "every alert rule loaded and evaluated without error")
    assert {group["file"] for group in prometheus.get("/api/v1/rules")["groups"]} == {str(RULES)}
    assert all(rule["labels"]["severity"] for rule in loaded)

    def alerting() -> None:
        """The platform's targets answer, Redis is up, each queue has a worker: the only one of these
        alerts active (pending, firing after 1m) is the target-down alert of the target where nothing listens."""
        active = [alert["labels"] for alert in prometheus.get("/api/v1/alerts")["alerts"]
                  if alert["labels"]["alertname"] in {"LLMScrapeTargetDown", "LLMNoLiveWorker", "LLMRedisDown"}]
        assert [(labels["alertname"], labels.get("job"), labels["severity"]) for labels in active] == [
            ("LLMScrapeTargetDown", DOWN_JOB, "critical")], active

    eventually(alerting, "a target-down alert for the dead target only, no worker or Redis alert")
