"""The dashboard: `GET /v1/dashboard` (its figures, who sees which, Prometheus or the platform's own) and
the `/dashboard` page in headless Chromium (charts that fill and refresh, a narrow screen, API keys)."""
from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from helpers import app_with, free_port, job_store, new_api_key
from jobs.queues import QUEUES
from monitoring.figures import RATE_WINDOW_S
from jobs.recent import remember_job
from test_playground import CHROMEDRIVER, CHROMIUM, browser  # noqa: F401 (the browser fixture)
from monitoring.figures import percentile, platform_figures
from webapp.dashboard import job_timing

TOP_LEVEL = {"source", "scope", "key_id", "generated_at", "refresh_s", "fallback", "window", "throughput", "latency",
             "cache", "routing", "errors", "queues", "jobs"}
needs_chromium = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="chromium and chromium-driver are not installed (`make test` installs them when run as root)",
)
CHARTS = ("chart-throughput", "chart-latency", "chart-queues", "chart-cache", "chart-tiers", "chart-intents",
          "chart-outcomes", "chart-jobs")


def _result(tier: str, cached=False, **timings) -> dict:
    base = {"tier": tier, "tokens": 4, "prompt_tokens": 9, "cached": cached, "latency_ms": 900.0, "queue_ms": 100.0,
            "routing_ms": 50.0, "first_token_ms": 250.0, "generation_ms": 750.0}
    return {**base, **timings}


def _record(status: str = "succeeded", tier: str = "small", intent: str = "factual", result: dict | None = None,
            age_s: float = 5.0, error: dict | None = None) -> dict:
    now = time.time()
    record = {"id": uuid.uuid4().hex, "status": status, "created_at": now - age_s - 1, "request": {},
              "routing": {"intent": intent, "tier": tier, "score": 0.8}}
    if status in ("succeeded", "failed", "cancelled"):
        record["finished_at"] = now - age_s
    if status == "succeeded":
        record["result"] = result or _result(tier)
    if error:
        record["error"] = error
    return record


def _stored_job(owner: str | None, prompt: str = "a dashboard job", **fields) -> str:
    """A finished job record in the test Redis, listed as the recent-jobs list would list it."""
    record = _record(**fields)
    job_id = record.pop("id")
    record.pop("request")
    job_store().create(job_id, {"prompt": prompt, "key_id": owner}, **record)
    remember_job(job_store(), job_id, keep=100, owner=owner)
    return job_id


# ---------------------------------------------------------------- the figures, computed


def test_percentiles_interpolate_between_ranks():
    assert percentile([], 0.5) is None
    assert percentile([10.0], 0.95) == 10.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert percentile([0.0, 10.0, 20.0, 30.0, 40.0], 0.95) == 38.0


def test_the_platform_figures_from_job_records():
    records = [
        _record(tier="small", result=_result("small", latency_ms=800.0, first_token_ms=200.0)),
        _record(tier="small", result=_result("small", latency_ms=1200.0, first_token_ms=400.0)),
        _record(tier="large", intent="deep_explanation", result=_result("large", latency_ms=5000.0)),
        _record(tier="small", result={"tier": "small", "cached": "exact", "latency_ms": 3.0, "tokens": 4}),
        _record(tier="large", result={"tier": "large", "cached": "semantic", "latency_ms": 40.0, "tokens": 4}),
        _record("failed", tier="large", error={"type": "EngineStalled", "message": "stalled"}),
        _record("generating", tier="small"),
        _record(tier="small", age_s=600),  # finished long ago: not in the last minute's throughput
    ]
    figures = platform_figures(records, time.time(), max_jobs=100)
    assert figures["window"] == {"jobs": 8, "max_jobs": 100, "rate_s": 60}
    # Six jobs finished in the last minute; tokens count the generated ones only (not cache hits).
    assert figures["throughput"] == {"jobs_per_s": round(6 / 60, 3), "tokens_per_s": round(12 / 60, 3)}
    small, large = figures["latency"]["small"], figures["latency"]["large"]
    assert small["jobs"] == 3 and small["p50_ms"] == 900.0 and small["first_token_p50_ms"] == 250.0
    assert large["jobs"] == 1 and large["p95_ms"] == 5000.0
    assert figures["cache"]["exact"] == {"hits": 1, "lookups": 7, "ratio": round(1 / 7, 4)}
    assert figures["cache"]["semantic"] == {"hits": 1, "lookups": 6, "ratio": round(1 / 6, 4)}
    assert figures["routing"]["tiers"] == {"small": 5, "large": 3}
    assert figures["routing"]["intents"] == {"factual": 7, "deep_explanation": 1}
    assert figures["errors"] == {"succeeded": 6, "failed": 1, "cancelled": 0, "running": 1,
                                 "failed_ratio": round(1 / 7, 4)}


def test_a_jobs_time_split_adds_up_to_its_latency():
    timing = job_timing(_record(result=_result("small")))
    assert timing["split_ms"] == {"queue": 100.0, "routing": 50.0, "first_token": 250.0, "generation": 500.0,
                                  "cache": None}
    assert sum(part for part in timing["split_ms"].values() if part) == timing["latency_ms"]
    hit = job_timing(_record(result={"tier": "small", "cached": "exact", "latency_ms": 3.0}))
    assert hit["cached"] == "exact" and hit["split_ms"]["cache"] == 3.0 and hit["split_ms"]["queue"] is None


# ---------------------------------------------------------------- GET /v1/dashboard


def test_with_keys_off_everything_is_shown(client):
    job_id = _stored_job(None)
    body = client.get("/v1/dashboard").get_json()
    assert set(body) == TOP_LEVEL
    assert body["source"] == "platform" and body["scope"] == "platform" and body["fallback"] is None
    assert body["key_id"] is None
    assert set(body["queues"]) == set(QUEUES)
    assert all(set(queue) == {"depth", "workers"} for queue in body["queues"].values())
    assert set(body["latency"]) == {"small", "large"}
    assert set(body["cache"]) == {"exact", "semantic"} and set(body["routing"]) == {"tiers", "intents"}
    assert {"jobs_per_s", "tokens_per_s"} == set(body["throughput"])
    assert {"failed", "recent"} <= set(body["errors"])
    job = next(job for job in body["jobs"] if job["id"] == job_id)
    assert set(job["split_ms"]) == {"queue", "routing", "first_token", "generation", "cache"}
    assert "prompt" not in job, "the dashboard never shows prompts"


def test_the_page_loads_without_a_key_and_vendors_chart_js():
    client = app_with(api_keys_required=True).test_client()
    page = client.get("/dashboard")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'id="api-key"' in html and "chart-4.5.1.umd.min.js" in html and "apikey.js" in html
    assert "cdn" not in html.lower()
    script = client.get("/static/vendor/chart-4.5.1.umd.min.js")
    assert script.status_code == 200 and b"Chart.js v4.5.1" in script.data
    script.close()


@pytest.fixture(scope="module")
def keyed():
    return app_with(api_keys_required=True, read_rate_limit="1000/minute").test_client()


def test_with_keys_on_a_key_is_needed(keyed):
    response = keyed.get("/v1/dashboard")
    assert response.status_code == 401 and response.headers["WWW-Authenticate"] == "Bearer"


def test_a_key_that_is_not_an_admin_sees_only_its_own_jobs(keyed):
    token, record = new_api_key("dashboard tenant")
    _, other = new_api_key("another dashboard tenant")
    own = {_stored_job(record["id"]), _stored_job(record["id"], status="failed", error={"type": "X", "message": "m"})}
    theirs = _stored_job(other["id"])
    body = keyed.get("/v1/dashboard", headers={"Authorization": f"Bearer {token}"}).get_json()
    assert body["scope"] == "key" and body["key_id"] == record["id"]
    assert body["queues"] is None, "queue depths are platform-wide"
    assert {job["id"] for job in body["jobs"]} == own and theirs not in {job["id"] for job in body["jobs"]}
    assert body["window"]["jobs"] == 2
    assert body["errors"]["failed"] == 1 and [f["id"] for f in body["errors"]["recent"]] == [
        job["id"] for job in body["jobs"] if job["status"] == "failed"]


def test_an_admin_key_sees_the_platform(keyed):
    token, _ = new_api_key("dashboard admin", admin=True)
    _, tenant = new_api_key("a tenant the admin sees")
    theirs = _stored_job(tenant["id"])
    body = keyed.get("/v1/dashboard", headers={"Authorization": f"Bearer {token}"}).get_json()
    assert body["scope"] == "platform" and set(body["queues"]) == set(QUEUES)
    assert theirs in {job["id"] for job in body["jobs"]}


def test_prometheus_that_does_not_answer_falls_back_to_the_platforms_figures():
    client = app_with(prometheus_url=f"http://127.0.0.1:{free_port()}").test_client()
    started = time.monotonic()
    body = client.get("/v1/dashboard").get_json()
    assert time.monotonic() - started < 5
    assert body["source"] == "platform"
    assert "Prometheus did not answer" in body["fallback"]
    assert set(body["queues"]) == set(QUEUES), "the platform's own queue depths stand in"


class FakePrometheus(BaseHTTPRequestHandler):
    """Answers /api/v1/query with a vector chosen by what the query asks for."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        url = urlparse(self.path)
        if url.path != "/api/v1/query":  # a PROMETHEUS_URL that names some other server or path
            self.send_response(404)
            self.end_headers()
            self.wfile.write(b"<html>not here</html>")
            return
        query = parse_qs(url.query)["query"][0]
        body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": self.vector(query)}})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    @staticmethod
    def vector(query: str) -> list[dict]:
        def sample(value, **labels):
            return {"metric": labels, "value": [time.time(), str(value)]}

        if query.startswith("histogram_quantile(0.5, sum by (tier, le) (rate(llm_job_duration"):
            return [sample(1.5, tier="small"), sample("NaN", tier="large")]
        if "llm_queue_depth" in query:
            return [sample(3, queue="small-queue")]
        if "llm_cache_lookups_total" in query:
            return [sample(2, kind="exact", outcome="hit"), sample(6, kind="exact", outcome="miss")]
        if "sum by (status)" in query:
            return [sample(9.2, status="succeeded"), sample(1, status="failed")]
        if query == f"sum(rate(llm_jobs_total[{RATE_WINDOW_S}s]))":
            return [sample(0.25)]
        return []

    def log_message(self, *args):  # quiet
        pass


def test_with_prometheus_answering_the_figures_come_from_it():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakePrometheus)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = app_with(prometheus_url=f"http://127.0.0.1:{server.server_port}/").test_client()
        body = client.get("/v1/dashboard").get_json()
        wrong = app_with(prometheus_url=f"http://127.0.0.1:{server.server_port}/grafana").test_client()
        not_prometheus = wrong.get("/v1/dashboard").get_json()
    finally:
        server.shutdown()
    assert not_prometheus["source"] == "platform" and "HTTP 404" in not_prometheus["fallback"]
    assert body["source"] == "prometheus" and body["fallback"] is None
    assert body["throughput"] == {"jobs_per_s": 0.25, "tokens_per_s": 0}
    assert body["latency"]["small"]["p50_ms"] == 1500.0 and body["latency"]["large"]["p50_ms"] is None
    assert body["queues"]["small-queue"] == {"depth": 3, "workers": None}
    assert body["cache"]["exact"] == {"hits": 2, "lookups": 8, "ratio": 0.25}
    assert body["errors"]["succeeded"] == 9 and body["errors"]["failed"] == 1
    assert isinstance(body["jobs"], list), "the last jobs still come from the platform"


# ---------------------------------------------------------------- the page, in headless Chromium


def chart_sizes(driver) -> dict:
    """Each chart's number of labels and of data points in its first dataset."""
    return driver.execute_script("""
        const sizes = {};
        for (const id of arguments[0]) {
          const chart = Chart.getChart(document.getElementById(id));
          sizes[id] = chart ? {labels: chart.data.labels.length,
                               points: chart.data.datasets.map((d) => d.data.length)} : null;
        }
        return sizes;""", list(CHARTS))


def jobs_shown(driver) -> list[str]:
    """The short job ids the time-split chart labels its bars with (each label: [id, tier · status])."""
    return driver.execute_script(
        "return Chart.getChart(document.getElementById('chart-jobs')).data.labels.map((label) => label[0])")


def wait_for(driver, condition, timeout: float, describe):
    """WebDriverWait on `condition`; on timeout an AssertionError with `describe()` (what the page had)."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout).until(condition)
    except TimeoutException:
        raise AssertionError(describe()) from None


def show_whole_page(driver, width: int, mobile: bool) -> None:
    """Make the viewport `width` wide and as tall as the page, so that a screenshot holds all of it."""
    metrics = {"width": width, "height": 1000, "deviceScaleFactor": 1, "mobile": mobile}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {**metrics, "height": height})


def run_jobs(base_url: str, prompts: list[str], token: str | None = None) -> list[str]:
    import requests

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    ids = []
    for prompt in prompts:
        response = requests.post(f"{base_url}/generate", json={"prompt": prompt, "max_tokens": 4}, headers=headers,
                                 timeout=240)
        assert response.status_code == 200, response.text
        ids.append(response.json()["id"])
    return ids


@needs_chromium
def test_the_dashboard_fills_its_charts_and_fits_a_narrow_screen(live_server, browser, artifacts_dir):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    ids = run_jobs(live_server, ["What is the capital of Italy?", "Name a prime number below ten.",
                                 "What is the capital of Italy?"])  # the third is an exact cache hit
    browser.get(f"{live_server}/dashboard")
    assert browser.title == "LLM platform dashboard"
    assert browser.find_elements(By.ID, "api-key") == []

    def filled(driver) -> bool:
        sizes = chart_sizes(driver)
        return all(size and size["labels"] and all(size["points"]) for size in sizes.values())

    wait_for(browser, filled, 30, lambda: f"the charts never filled: {chart_sizes(browser)}")
    assert browser.find_element(By.ID, "source").text.startswith("Platform figures, the platform's own")
    assert all(job_id[:8] in jobs_shown(browser) for job_id in ids)
    # Refreshes by itself: the throughput line gains points without a reload.
    WebDriverWait(browser, 15).until(lambda d: chart_sizes(d)["chart-throughput"]["labels"] >= 2)
    assert browser.find_element(By.ID, "cache-figure").text.startswith("exact ")
    show_whole_page(browser, 1280, mobile=False)
    browser.save_screenshot(str(artifacts_dir / "dashboard.png"))

    # A phone-sized screen: one column of charts, nothing wider than the screen.
    show_whole_page(browser, 375, mobile=True)
    WebDriverWait(browser, 15).until(lambda d: d.execute_script(
        "return Chart.getChart(document.getElementById('chart-jobs')).width") <= 375)
    width = "return document.documentElement.scrollWidth"
    wait_for(browser, lambda d: d.execute_script(width) <= 376, 15,
             lambda: f"the page is {browser.execute_script(width)} px wide on a 375 px screen")
    boxes = [browser.find_element(By.ID, name).rect for name in ("chart-throughput", "chart-latency")]
    assert boxes[1]["y"] > boxes[0]["y"] + boxes[0]["height"], "the charts stack on a narrow screen"
    show_whole_page(browser, 375, mobile=True)
    browser.save_screenshot(str(artifacts_dir / "dashboard-narrow.png"))


@needs_chromium
def test_with_keys_on_a_tenant_sees_its_own_figures_only(keyed_live_server, browser, artifacts_dir):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    token, record = new_api_key("dashboard page tenant")
    other_token, _ = new_api_key("dashboard page neighbour")
    (own,) = run_jobs(keyed_live_server, ["What colour is the sky?"], token)
    (theirs,) = run_jobs(keyed_live_server, ["What colour is grass?"], other_token)

    browser.get(f"{keyed_live_server}/dashboard")
    source = browser.find_element(By.ID, "source")
    WebDriverWait(browser, 15).until(lambda d: "Enter an API key" in source.text)
    browser.find_element(By.ID, "api-key").send_keys(token, Keys.ENTER)
    WebDriverWait(browser, 30).until(lambda d: source.text.startswith("Your key's figures"))

    shown = jobs_shown(browser)
    assert own[:8] in shown, shown
    assert theirs[:8] not in shown, "another key's job is shown"
    assert chart_sizes(browser)["chart-queues"] == {"labels": 0, "points": [0, 0]}
    assert "admin keys only" in browser.find_element(By.ID, "queues-figure").text
    assert "own jobs only" in browser.find_element(By.ID, "scope").text
    WebDriverWait(browser, 15).until(lambda d: d.find_element(By.ID, "usage-key").text == record["id"])
    assert browser.execute_script("return sessionStorage.getItem('playground.apiKey')") == token
    show_whole_page(browser, 1280, mobile=False)
    browser.save_screenshot(str(artifacts_dir / "dashboard-keyed.png"))
