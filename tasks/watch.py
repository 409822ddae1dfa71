"""The watch on running jobs: it turns a job's cancel flag (or its deadline) into the engine's cancel event.

One thread per worker process (`JobWatcher`) watches every job the process runs, in one Redis round
trip per poll for all of them: each job's cancel flag, and its progress (`tokens_so_far`) where it
moved. A thread and two round trips per job per poll cost the engine's cores more than the jobs' own
Python did.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Optional

import redis

from jobs.control import cancel_key
from jobs.store import JobStore

log = logging.getLogger(__name__)


class GenerationWatch:
    """Sets `cancel` (the engine request's event) when the job's cancel flag appears or its deadline passes.

    The watch polls the flag (through its process's JobWatcher), so a job waiting for a batch slot is
    stopped too, not only one that is producing tokens; on the way it records the job's progress
    (`tokens_so_far`), with the delivery's `fence`. `reason` says why it fired: "cancelled",
    "timeout", or "superseded" (a later delivery of the job has begun, or the job ended); it is final
    once the `with` block has ended. `tokens_at_cancel` is how many tokens the caller had counted at
    that moment, to report how far the engine ran on.
    """

    def __init__(self, store: JobStore, job_id: str, cancel: threading.Event, poll_s: float,
                 deadline: Optional[float] = None, fence: Optional[int] = None) -> None:
        self.store, self.job_id, self.cancel, self.deadline, self.fence = store, job_id, cancel, deadline, fence
        self.poll_s = poll_s
        self.reason: Optional[str] = None
        self.tokens = 0  # advanced by the caller as chunks arrive
        self.tokens_at_cancel: Optional[int] = None
        self.reported = 0  # tokens_so_far as last written

    def __enter__(self) -> "GenerationWatch":
        # A deadline that already passed stops the job before the engine sees it. The cancel flag was read
        # as the delivery began (tasks.delivery), a moment ago: the first poll reads it again.
        self.timed_out(time.time())
        JobWatcher.of(self.store, self.poll_s).add(self)
        return self

    def __exit__(self, *_) -> None:
        JobWatcher.of(self.store, self.poll_s).remove(self)

    def timed_out(self, now: float) -> bool:
        """Fires "timeout" once the deadline has passed; whether it has."""
        if self.deadline is not None and now >= self.deadline:
            self.fire("timeout")
            return True
        return False

    def fire(self, reason: str) -> None:
        if not self.reason:
            self.reason, self.tokens_at_cancel = reason, self.tokens
            self.cancel.set()


class JobWatcher:
    """One thread that polls every `poll_s` for all the watches of its process (one per store and poll
    interval), in one pipeline: the progress notes first, then the cancel flags, so that a note refused
    by a cancel that landed meanwhile reads as that cancel, not as a later delivery."""

    _all: dict[tuple[int, float], "JobWatcher"] = {}
    _all_lock = threading.Lock()

    @classmethod
    def of(cls, store: JobStore, poll_s: float) -> "JobWatcher":
        with cls._all_lock:
            key = (id(store), poll_s)
            if key not in cls._all:
                cls._all[key] = cls(store, poll_s)
            return cls._all[key]

    def __init__(self, store: JobStore, poll_s: float) -> None:
        self.store, self.poll_s = store, poll_s
        self._watches: set[GenerationWatch] = set()
        self._changed = threading.Condition()
        self._polling = threading.Lock()  # held through a poll: a watch leaves between polls only
        self._thread: Optional[threading.Thread] = None

    def add(self, watch: GenerationWatch) -> None:
        with self._changed:
            first = not self._watches
            self._watches.add(watch)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="job-watcher", daemon=True)
                self._thread.start()
            if first or (watch.deadline is not None and watch.deadline - time.time() < self.poll_s):
                self._changed.notify()  # an idle watcher wakes; a deadline may come before the next poll

    def remove(self, watch: GenerationWatch) -> None:
        with self._polling, self._changed:
            self._watches.discard(watch)

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._watches:
                    self._changed.wait()
                self._changed.wait(self._next_wait())
            with self._polling:
                with self._changed:
                    watches = [watch for watch in self._watches if not watch.reason]
                try:
                    self.poll(watches)
                except redis.RedisError as exc:  # a Redis blip must not end the jobs; poll again
                    log.warning("cancel poll failed for %d job(s): %s", len(watches), type(exc).__name__)
                except Exception:  # the watcher serves every job of the process: it must outlive a bug
                    log.exception("cancel poll failed for %d job(s)", len(watches))

    def _next_wait(self) -> float:
        # A watch that fired waits for its task to leave: its past deadline must not make this spin.
        deadlines = [watch.deadline for watch in self._watches if watch.deadline is not None and not watch.reason]
        return max(0.0, min([self.poll_s, *(deadline - time.time() for deadline in deadlines)]))

    def poll(self, watches: list[GenerationWatch]) -> None:
        """One round for `watches`: deadlines, progress notes and cancel flags."""
        now = time.time()
        watches = [watch for watch in watches if not watch.timed_out(now)]
        if not watches:
            return
        noted = [(watch, watch.tokens) for watch in watches if watch.tokens != watch.reported]
        try:
            answers = self._round_trip(watches, noted)
        except redis.exceptions.NoScriptError:  # Redis restarted: notes and checks may run twice
            self.store.load_scripts()
            answers = self._round_trip(watches, noted)
        for watch, flagged in zip(watches, answers[len(noted):]):
            if flagged:
                watch.fire("cancelled")
        for (watch, tokens), applied in zip(noted, answers[:len(noted)]):
            watch.reported = tokens
            if not int(applied) and watch.fence:
                watch.fire("superseded")  # a later delivery runs the job (or it ended): stop this one

    def _round_trip(self, watches: list[GenerationWatch], noted: list[tuple[GenerationWatch, int]]) -> list:
        pipe = self.store.redis.pipeline(transaction=False)
        for watch, tokens in noted:
            self.store.annotate_in(pipe, watch.job_id, fence=watch.fence, tokens_so_far=tokens)
        for watch in watches:
            pipe.exists(cancel_key(watch.job_id))
        return pipe.execute()
