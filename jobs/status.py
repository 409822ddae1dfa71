"""A job's statuses and the transitions allowed between them."""
from __future__ import annotations

from enum import Enum


class JobStatus(str, Enum):
    """Where a job is. The last three are final: a final job never changes status again."""

    QUEUED = "queued"
    ROUTING = "routing"
    GENERATING = "generating"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})

# from -> the statuses it may move to. A job goes back to `queued` when the router hands it to a
# tier or a tier falls back to the other; a redelivered task (its worker died) moves the job to its
# own stage again; `cancelled -> cancelled` lets the worker that stops a cancelled job attach what
# it generated, without overwriting what the cancel wrote.
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.ROUTING, JobStatus.GENERATING, JobStatus.QUEUED, *FINAL_STATUSES}),
    JobStatus.ROUTING: frozenset({JobStatus.ROUTING, JobStatus.QUEUED, *FINAL_STATUSES}),
    JobStatus.GENERATING: frozenset({JobStatus.GENERATING, JobStatus.QUEUED, *FINAL_STATUSES}),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset({JobStatus.CANCELLED}),
}


def is_final(status: str) -> bool:
    """True for succeeded, failed and cancelled."""
    return status in {s.value for s in FINAL_STATUSES}


def may_move(current: str, target: str) -> bool:
    """Whether a job in `current` may move to `target` (the rule the Redis guard script applies)."""
    return JobStatus(target) in TRANSITIONS[JobStatus(current)]
