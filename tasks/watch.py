"""The watch on a running job: it turns the job's cancel flag (or its deadline) into the engine's cancel event."""
from __future__ import annotations

import logging
import threading
import time
from typing import Optional

import redis

from jobs.control import cancel_requested
from jobs.store import JobStore

log = logging.getLogger(__name__)


class GenerationWatch:
    """Sets `cancel` (the engine request's event) when the job's cancel flag appears or its deadline passes.

    A thread polls the flag, so a job waiting for a batch slot is stopped too, not only one that is
    producing tokens; on the way it records the job's progress (`tokens_so_far`), with the delivery's
    `fence`. `reason` says why it fired: "cancelled", "timeout", or "superseded" (a later delivery of
    the job has begun, or the job ended). `tokens_at_cancel` is how many tokens the caller had counted
    at that moment, to report how far the engine ran on.
    """

    def __init__(self, store: JobStore, job_id: str, cancel: threading.Event, poll_s: float,
                 deadline: Optional[float] = None, fence: Optional[int] = None) -> None:
        self.store, self.job_id, self.cancel, self.deadline, self.fence = store, job_id, cancel, deadline, fence
        self.poll_s = poll_s
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
            return self.poll_s
        return max(0.0, min(self.poll_s, self.deadline - time.time()))

    def _check(self) -> None:
        if self.deadline is not None and time.time() >= self.deadline:
            self._fire("timeout")
        elif cancel_requested(self.store, self.job_id):
            self._fire("cancelled")

    def _report_progress(self) -> None:
        tokens = self.tokens
        if tokens != self._reported:
            if not self.store.annotate(self.job_id, fence=self.fence, tokens_so_far=tokens) and self.fence:
                self._check()  # a cancel that landed since the last check is a cancel
                if not self.reason:
                    self._fire("superseded")  # a later delivery runs the job (or it ended): stop this one
            self._reported = tokens

    def _fire(self, reason: str) -> None:
        self.reason, self.tokens_at_cancel = reason, self.tokens
        self.cancel.set()
