"""Submitting jobs to the routing queue and waiting for them; shared by every endpoint."""
from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone
from typing import Optional

from flask import g, has_request_context

from cache.entries import cached_result, pointer_fields, pointer_request
from jobs.control import cancel_job
from jobs.owners import in_flight, release_in_flight, reserve_in_flight
from jobs.queues import DEFAULT_PRIORITY
from jobs.recent import PROMPT_PREVIEW_CHARS, remember_job
from jobs.sentinel import replicated
from jobs.follow import StreamHub, wait_for_end
from routing.router import decision_without_embedding
from tenants.meter import usage_month
from webapp.backpressure import ensure_capacity
from webapp.context import WebContext, web
from webapp.errors import APIError


def submit_job(job: dict) -> dict:
    """Record the job and queue its routing task (or, for a forced tier that needs no embedding, its
    generation task); the job id is the Celery task id throughout.

    An exact cache hit is answered here: the record comes back already succeeded, nothing queued.
    """
    context, job_id = web(), uuid.uuid4().hex
    key = g.get("api_key")
    if key:
        ensure_budget(context, key)
        job = as_key_runs_it(key, job)
    cached = context.exact_cache.lookup(job)
    if cached is not None:
        now = time.time()
        result = cached_result(cached, "exact", now, now)
        record = _record(context, job_id, pointer_request(job, PROMPT_PREVIEW_CHARS),
                         **pointer_fields(result, context.exact_cache.entry_key(job), now))
        return {**{k: v for k, v in record.items() if k != "result_ref"}, "result": result}
    ensure_capacity(context, job)  # before the key's in-flight reservation: a full queue costs no more trips
    if key:
        job = with_fair_share(context, key, job, job_id)
    # A forced tier that needs no embedding skips the routing worker: its decision is known here.
    decision = decision_without_embedding(job, context.settings.semantic_cache_max_entries)
    routing = decision.as_dict() if decision else None
    routed = {"routing": routing, "routed_at": time.time()} if routing else {}
    try:
        record = _record(context, job_id, job, in_flight=True, **routed)
        context.broker.submit(job_id, job, routing)
    except Exception:
        context.store.delete(job_id)
        if key:
            release_in_flight(context.store, key["id"], job_id)
        raise
    ensure_replicated(context, record)
    return record


def ensure_replicated(context: WebContext, record: dict) -> None:
    """With REDIS_MIN_REPLICAS, answer only once that many replicas hold the job's record and message, so
    a failover right after cannot lose an accepted job. Otherwise the job is cancelled (so that a retry
    does not run it twice) and the caller gets a 503 to retry."""
    settings = context.settings
    if settings.redis_min_replicas <= 0:
        return
    try:
        if replicated(context.store.redis, settings.redis_min_replicas, settings.redis_replica_wait_ms):
            return
    except Exception:  # Redis away while waiting: the caller's 503, and the job stopped as far as it can be
        _try_to_cancel(context, record)
        raise
    cancel_job(context.store, record)
    raise APIError(503, "not_replicated", f"the job did not reach {settings.redis_min_replicas} Redis replica(s) "
                   f"within {settings.redis_replica_wait_ms} ms and was not accepted; retry",
                   headers={"Retry-After": "1"})


def _try_to_cancel(context: WebContext, record: dict) -> None:
    try:
        cancel_job(context.store, record)
    except Exception:
        pass  # the master is away: the job may run, and a retry run it again (at least once)


def as_key_runs_it(key: dict, job: dict) -> dict:
    """The job as the caller's key may run it: owned by the key (callers with different keys never
    share cached answers), at most at its priority ceiling."""
    job = {**job, "key_id": key["id"]}
    if key.get("max_priority") is not None:
        job["priority"] = min(job.get("priority", DEFAULT_PRIORITY), key["max_priority"])
    return job


def with_fair_share(context: WebContext, key: dict, job: dict, job_id: str) -> dict:
    """The job at its fair priority, counted among the key's jobs in flight; or a 429 when the key has
    its cap of unfinished jobs (reserved atomically: parallel submissions cannot all slip under it).

    Checked only for jobs that will queue (a cache answer needs no worker). With FAIR_SHARE on, each
    full batch of the key's jobs already unfinished (ENGINE_MAX_BATCH, the slots of a tier) lowers
    this one's priority by a step: a key that floods the queue has at most one batch ahead of
    another key's job at the same priority, so the other waits for one job per slot at most.
    """
    store, cap, batch = context.store, key.get("max_in_flight"), context.settings.engine_max_batch
    running = reserve_in_flight(store, key["id"], job_id, cap)
    if running is None or (context.settings.fair_share and running >= batch):
        # Only when the count matters (a cap, a step down) are ended jobs taken out of it: that reads
        # every counted job's status, which a key with few jobs in flight need not pay for.
        live = in_flight(store, key["id"])
        running = live - 1 if running is not None else reserve_in_flight(store, key["id"], job_id, cap)
    if running is None:
        raise APIError(429, "too_many_jobs", f"this key has {key['max_in_flight']} unfinished jobs, its limit; "
                       "retry when one ends", headers={"Retry-After": str(context.settings.queue_retry_after_s)})
    if not context.settings.fair_share:
        return job
    steps_down = running // batch
    return {**job, "priority": max(0, job.get("priority", DEFAULT_PRIORITY) - steps_down)} if steps_down else job


def ensure_budget(context: WebContext, key: dict) -> None:
    """A 429 `budget_exceeded` once the key has used its monthly token budget (nothing is queued)."""
    budget = key.get("monthly_token_budget")
    if not budget:
        return
    month = usage_month()
    used = g.get("month_tokens")  # read with the key (webapp.apikeys), in the same round trip
    if used is None:
        used = context.tenants.ledger.month_tokens(key["id"], month)
    if used >= budget:
        raise APIError(429, "budget_exceeded", f"this key used {used} of its {budget} tokens for {month}; "
                       "its budget renews on the first of next month (UTC)",
                       headers={"Retry-After": str(seconds_to_next_month())})


def seconds_to_next_month() -> int:
    now = datetime.now(timezone.utc)
    start = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=timezone.utc)
    return max(1, int((start - now).total_seconds()))


def _record(context: WebContext, job_id: str, job: dict, in_flight: bool = False, **fields) -> dict:
    """Create the job record, list it among the recent jobs and count the request for its key (a
    cache hit when it is not queued), in one round trip to Redis."""
    pipe = context.store.redis.pipeline()
    record = context.store.create(job_id, job, pipe=pipe, in_flight=in_flight, **fields)
    remember_job(context.store, job_id, context.settings.recent_jobs_max, pipe, owner=job.get("key_id"))
    context.tenants.meter.record(job.get("key_id"), pipe, requests=1, cache_hits=int(not in_flight))
    pipe.execute()
    return record


def stream_hub() -> StreamHub:
    """The process's stream hub for this app: every followed job is read by it, on a Redis client of its own."""
    return StreamHub.for_store(web().hub_store)


def mark_request_start() -> None:
    """Stamp the request's start (a `before_request` hook of the app): its deadlines count from here."""
    g.request_start = time.monotonic()


def request_deadline(timeout_s: float) -> float:
    """The request's deadline on the monotonic clock: its start plus `timeout_s`.

    One deadline per request: each wait inside it (the routing wait, following the stream,
    waiting for the job) gets only what is left, so waits in a row never add up past it.
    Outside a request (or before the stamp) it counts from the first call.
    """
    if not has_request_context():
        return time.monotonic() + timeout_s
    if "request_start" not in g:
        g.request_start = time.monotonic()
    return g.request_start + timeout_s


def time_left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def wait_for_job(job_id: str, timeout_s: float) -> Optional[dict]:
    """Block until the job ends or the request's `timeout_s` deadline passes; its final record (a failed
    one if the record is gone), or None on timeout.

    `timeout_s` counts from the start of the request (`request_deadline`), so time spent before
    the wait (validation, the cache lookup, queueing) is not added on top. The process's stream hub
    hears of the end as it happens (jobs.follow.wait_for_end): the wait reads no token stream and
    holds no Redis connection. A Redis that dies or hangs mid-wait is an error within about a second
    and the caller gets its 503.
    """
    return wait_for_end(web().store, job_id, request_deadline(timeout_s), hub=stream_hub())


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def job_view(record: dict) -> dict:
    """The public shape of a job record."""
    view = {"id": record["id"], "status": record["status"], "created_at": iso(record["created_at"])}
    if "routing" in record:
        view["routing"] = record["routing"]
        view["tier"] = record["routing"]["tier"]
    if record["status"] == "generating" and "tokens_so_far" in record:
        view["tokens_so_far"] = int(record["tokens_so_far"])
    if "finished_at" in record:
        view["finished_at"] = iso(record["finished_at"])
    for field in ("result", "error"):
        if field in record:
            view[field] = record[field]
    return view
