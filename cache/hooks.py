"""Generated answers go into both caches when their task succeeds (a Celery signal, loaded by workers)."""
from __future__ import annotations

import logging

from celery.signals import task_success

from cache.exact import exact_cache
from cache.semantic import semantic_cache

log = logging.getLogger(__name__)
GENERATION_TASKS = frozenset({"tasks.small.generate", "tasks.large.generate"})


@task_success.connect
def remember_answer(sender=None, result=None, **_) -> None:
    if getattr(sender, "name", None) not in GENERATION_TASKS or not isinstance(result, dict):
        return
    job = sender.request.args[0]
    try:
        exact_cache().store(job, result)
        semantic_cache().store(sender.request.id, job, result)
    except Exception:  # a cache that cannot store must not turn a good answer into an error
        log.exception("could not cache the answer of job %s", sender.request.id)
