"""`GET /v1/jobs`: the recent jobs, newest first, from a bounded Redis list."""
from __future__ import annotations

import uuid

from helpers import job_store
from jobs.recent import RECENT_KEY, remember_job


def _remembered_job(prompt: str, keep: int) -> str:
    job_id = uuid.uuid4().hex
    job_store().create(job_id, {"prompt": prompt, "max_tokens": 1, "temperature": 0.0, "tier": "auto"})
    remember_job(job_store(), job_id, keep)
    return job_id


def test_submitted_jobs_are_listed_newest_first_with_status_and_prompt(client):
    first = client.post("/v1/jobs", json={"prompt": "first prompt", "max_tokens": 1}).get_json()["id"]
    second = client.post("/v1/jobs", json={"prompt": "second " + "x" * 300, "max_tokens": 1}).get_json()["id"]
    jobs = client.get("/v1/jobs?limit=2").get_json()["jobs"]
    assert [job["id"] for job in jobs] == [second, first]
    assert jobs[1]["prompt"] == "first prompt" and len(jobs[0]["prompt"]) == 200
    assert all(job["status"] in ("queued", "routing", "generating", "succeeded") for job in jobs)


def test_the_list_is_bounded_and_skips_expired_jobs(client):
    ids = [_remembered_job(f"job {i}", keep=3) for i in range(5)]
    assert [i.decode() for i in job_store().redis.lrange(RECENT_KEY, 0, -1)] == ids[::-1][:3]
    job_store().delete(ids[3])  # as if it had expired
    listed = [job["id"] for job in client.get("/v1/jobs").get_json()["jobs"]]
    assert listed == [ids[4], ids[2]]


def test_a_bad_limit_is_a_400(client):
    for limit in ("0", "101", "many"):
        response = client.get(f"/v1/jobs?limit={limit}")
        assert response.status_code == 400 and response.get_json()["error"]["code"] == "invalid_request"
