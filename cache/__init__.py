"""Answer caches in Redis: exact (web process, before queueing) and semantic (routing worker)."""
from __future__ import annotations

import threading
from typing import Callable, TypeVar

import redis

T = TypeVar("T")


def built_once_on_job_store(build: Callable[[redis.Redis], T]) -> Callable[[], T]:
    """A process-wide accessor: `build` runs on first use (after any fork), with the job store's Redis."""
    lock = threading.Lock()
    built: list[T] = []

    def accessor() -> T:
        with lock:
            if not built:
                from tasks.jobs import job_store

                built.append(build(job_store().redis))
            return built[0]

    return accessor
