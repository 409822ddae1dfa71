"""Control over queued and running jobs: cancellation, backpressure, priority and tier fallback,
on real workers (the session's, paused or helped by workers of the test's own)."""
from __future__ import annotations

import time

import pytest

from helpers import job_store, task_returned, wait_for_job
from jobs.presence import live_workers
from settings import get_settings
from workerctl import (PYTHONPATH_WITH_TESTS, job_record, node, paused, queued_messages, started_worker, stop_warm,
                       submit, wait_until, wait_until_steady)

BEAT = get_settings().worker_heartbeat_s

pytestmark = pytest.mark.usefixtures("workers")

SMALL_PROMPT = "hey! how's it going today?"  # the router sends it to the small tier
LARGE_PROMPT = ("My Flask app crashes with a KeyError traceback when two requests arrive at once. "
                "Help me debug this race condition.")  # ... and this to the large tier


def test_cancelled_queued_job_never_runs(client):
    with paused("small", "small-queue"):
        job_id = submit(client, prompt="Name three colours.", tier="small", max_tokens=4)
        wait_until(lambda: job_record(job_id).get("routing") and queued_messages("small-queue"), 120,
                   "the job to wait in small-queue")
        response = client.delete(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.get_json()
        assert response.get_json()["status"] == "cancelled"
    # The worker takes the message now; the task ends without generating.
    task_returned(job_id)
    record = job_record(job_id)
    assert record["status"] == "cancelled"
    assert "generation_started_at" not in record and "result" not in record
    assert "tasks.small.generate" not in job_store().deliveries(job_id)


def test_cancelled_running_job_stops_within_one_decode_step(client):
    max_tokens = 400
    job_id = submit(client, prompt="Write a very long story about a dragon.", tier="small", max_tokens=max_tokens)
    wait_until(lambda: client.get(f"/v1/jobs/{job_id}").get_json().get("tokens_so_far", 0) >= 2, 300,
               "the job to produce its first tokens")
    response = client.delete(f"/v1/jobs/{job_id}")
    assert response.status_code == 200 and response.get_json()["status"] == "cancelled"

    task_returned(job_id)  # the task has returned
    record = job_record(job_id)
    result = record["result"]
    print(f"cancelled after {result['tokens']} tokens; tokens decoded after the cancel was seen: "
          f"{result['tokens_after_cancel']}")
    assert record["status"] == "cancelled"
    assert result["finish_reason"] == "cancelled"
    assert result["tokens"] < max_tokens
    assert result["tokens_after_cancel"] <= 1


def test_delete_of_unknown_or_finished_jobs(client):
    assert client.delete("/v1/jobs/0123456789abcdef0123456789abcdef").status_code == 404
    store = job_store()
    store.create("f" * 32, {"prompt": "done already"}, status="succeeded")
    response = client.delete("/v1/jobs/" + "f" * 32)
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "conflict"
    assert job_record("f" * 32)["status"] == "succeeded"


def test_full_queue_refuses_with_429_and_queues_nothing():
    from helpers import app_with

    with paused("routing", "routing"):
        depth = queued_messages("routing")
        limited = app_with(routing_max_depth=depth + 2, queue_retry_after_s=7)
        client = limited.test_client()
        accepted = [submit(client, prompt="hello there", max_tokens=2) for _ in range(2)]
        jobs_before = len(job_store().redis.keys("job:*"))

        response = client.post("/v1/jobs", json={"prompt": "one too many", "max_tokens": 2})
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "7"
        error = response.get_json()["error"]
        assert error["code"] == "queue_full" and error["queue"] == "routing"
        assert queued_messages("routing") == depth + 2
        assert len(job_store().redis.keys("job:*")) == jobs_before  # no record either
        for job_id in accepted:
            client.delete(f"/v1/jobs/{job_id}")


def test_high_priority_job_overtakes_queued_low_priority_ones(client):
    lows = []
    with paused("small", "small-queue"):
        for n in range(6):
            lows.append(submit(client, prompt=f"Count to {n + 2}.", tier="small", max_tokens=3, priority=0))
        wait_until(lambda: queued_messages("small-queue") == 6, 180, "six low-priority jobs in small-queue")
        high = submit(client, prompt="Say hi.", tier="small", max_tokens=3, priority=9)
        wait_until(lambda: queued_messages("small-queue") == 7, 180, "the high-priority job in small-queue")
    views = {job_id: wait_for_job(client, job_id, timeout=600) for job_id in [*lows, high]}
    assert all(view["status"] == "succeeded" for view in views.values()), views

    records = {job_id: job_record(job_id) for job_id in views}
    high_started = records[high]["generation_started_at"]
    lows_started_later = sum(records[j]["generation_started_at"] > high_started for j in lows)
    print(f"high-priority job started before {lows_started_later} of 6 low-priority jobs queued ahead of it")
    # FIFO would start it last, after the worker's 4 slots had freed up at least once.
    assert high_started < min(records[j]["finished_at"] for j in lows)
    assert lows_started_later >= 3


def test_job_falls_back_when_its_tier_has_no_live_worker(client):
    redis = job_store().redis
    with paused("large", "large-queue"):
        wait_until_steady(lambda: node("large") not in live_workers(redis, "large-queue", BEAT)
                          and node("small") in live_workers(redis, "small-queue", BEAT), 1.5 * BEAT, 60,
                          "no live worker on the large tier and one on the small tier")
        job_id = submit(client, prompt=LARGE_PROMPT, max_tokens=4)
        view = wait_for_job(client, job_id, timeout=300)
    assert view["status"] == "succeeded", view
    expected = {"from": "large", "to": "small", "reason": "no_live_workers"}
    assert view["routing"]["fallback"] == expected
    assert view["result"]["fallback"] == expected
    assert view["result"]["tier"] == "small" and view["result"]["queue"] == "small-queue"
    wait_until(lambda: node("large") in live_workers(redis, "large-queue", BEAT), 60, "the large tier to be live again")


def test_job_falls_back_when_its_tier_times_out(client, artifacts_dir):
    redis = job_store().redis
    # A small worker whose soft time limit has passed before any job starts.
    slow = started_worker("small-slow", artifacts_dir / "logs", "small-queue", {"SMALL_TIME_LIMIT_S": "0.001"},
                          concurrency=1)
    try:
        with paused("small", "small-queue"):
            wait_until(lambda: node("small-slow") in live_workers(redis, "small-queue", BEAT), 60, "the slow worker")
            job_id = submit(client, prompt=SMALL_PROMPT, max_tokens=4)
            view = wait_for_job(client, job_id, timeout=300)
    finally:
        stop_warm(slow)
    assert view["status"] == "succeeded", view
    expected = {"from": "small", "to": "large", "reason": "timeout"}
    assert view["result"]["fallback"] == expected and view["routing"]["fallback"] == expected
    assert view["result"]["tier"] == "large" and view["result"]["queue"] == "large-queue"
    assert job_store().deliveries(job_id) == {"tasks.routing.route": 1, "tasks.small.generate": 1,
                                              "tasks.large.generate": 1}


def test_a_wedged_engine_fails_readiness_and_its_jobs_fall_back(client, artifacts_dir, tmp_path):
    """The small tier's only consuming worker wedges mid-job: within ENGINE_STALL_S and a few beats
    /ready says so, the job in the engine moves to the large tier, and new small jobs go there too."""
    flag = tmp_path / "wedge"
    env = {"ENGINE_STALL_S": "2", "WORKER_HEARTBEAT_S": "0.5", "WEDGE_FLAG": str(flag),
           "PYTHONPATH": PYTHONPATH_WITH_TESTS}
    wedged = started_worker("small-wedged", artifacts_dir / "logs", "small-queue", env, concurrency=2,
                            extra_args=("-I", "wedge_engine"))
    try:
        with paused("small", "small-queue"):
            wait_until(lambda: client.get("/ready").status_code == 200, 60, "the stack to be ready")
            flag.touch()
            stuck = submit(client, prompt=SMALL_PROMPT, max_tokens=4)
            wait_until(lambda: job_record(stuck).get("status") == "generating", 120, "the job to reach the engine")
            started = time.monotonic()
            ready = wait_until(lambda: (r := client.get("/ready")).status_code == 503 and r.get_json(), 60,
                               "/ready to report the wedged tier")
            print(f"\n/ready failed {time.monotonic() - started:.1f}s after the job reached the wedged engine")
            assert ready["workers"]["small-queue"] == 0 and "small-queue" in ready["error"]["message"]
            view = wait_for_job(client, stuck, timeout=120)
            later = wait_for_job(client, submit(client, prompt=SMALL_PROMPT, max_tokens=4), timeout=120)
            flag.unlink()
    finally:
        flag.unlink(missing_ok=True)
        stop_warm(wedged)
    assert view["status"] == "succeeded", view
    assert view["result"]["fallback"] == {"from": "small", "to": "large", "reason": "engine_stalled"}
    assert view["result"]["tier"] == "large"
    assert later["status"] == "succeeded" and later["result"]["tier"] == "large"
    assert later["routing"]["fallback"]["reason"] == "no_live_workers"
