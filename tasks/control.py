"""Stopping a job from outside: a cancel flag in Redis, and a watch that turns it (or a deadline) into the
engine's cancel event."""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Optional

import redis

from tasks.jobs import JobStore, job_ttl_s

log = logging.getLogger(__name__)


def cancel_key(job_id: str) -> str:
    return f"job:{job_id}:cancel"


def request_cancel(client: redis.Redis, job_id: str) -> None:
    """Raise the job's cancel flag; whichever worker holds the job sees it."""
    client.set(cancel_key(job_id), 1, ex=job_ttl_s())


def cancel_requested(client: redis.Redis, job_id: str) -> bool:
    return bool(client.exists(cancel_key(job_id)))


def cancel_poll_s() -> float:
    return float(os.environ.get("CANCEL_POLL_S", "0.2"))


class GenerationWatch:
    """Sets `cancel` (the engine request's event) when the job's cancel flag appears or its deadline passes.

    A thread polls the flag, so a job waiting for a batch slot is stopped too, not only one that is
    producing tokens; on the way it records the job's progress (`tokens_so_far`). `reason` says why
    it fired ("cancelled" or "timeout"); `tokens_at_cancel` is how many tokens the caller had counted
    at that moment, to report how far the engine ran on.
    """

    def __init__(self, store: JobStore, job_id: str, cancel: threading.Event,
                 deadline: Optional[float] = None) -> None:
        self.store, self.job_id, self.cancel, self.deadline = store, job_id, cancel, deadline
        self.reason: Optional[str] = None
        self.tokens = 0  # advanced by the caller as chunks arrive
        self.tokens_at_cancel: Optional[int] = None
        self._reported = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch-{job_id[:8]}", daemon=True)

    def __enter__(self) -> "GenerationWatch":
        self._check()  # a deadline that already passed stops the job before the engine sees it
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        while not self.reason and not self._done.wait(self._next_wait()):
            try:
                self._check()
                self._report_progress()
            except redis.RedisError as exc:  # a Redis blip must not end the job; poll again
                log.warning("cancel poll failed for job %s: %s", self.job_id, type(exc).__name__)

    def _next_wait(self) -> float:
        if self.deadline is None:
            return cancel_poll_s()
        return max(0.0, min(cancel_poll_s(), self.deadline - time.time()))

    def _check(self) -> None:
        if self.deadline is not None and time.time() >= self.deadline:
            self._fire("timeout")
        elif cancel_requested(self.store.redis, self.job_id):
            self._fire("cancelled")

    def _report_progress(self) -> None:
        tokens = self.tokens
        if tokens != self._reported:
            self.store.advance(self.job_id, tokens_so_far=tokens)
            self._reported = tokens

    def _fire(self, reason: str) -> None:
        self.reason, self.tokens_at_cancel = reason, self.tokens
        self.cancel.set()
