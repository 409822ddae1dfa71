"""Queue depth as a gauge (StatsD and Prometheus): every queue's depth (jobs.queues, all priorities), sampled
on a timer."""
from __future__ import annotations

import logging
import threading
from typing import Mapping, Sequence

import redis

from jobs.queues import QUEUES, queue_depths
from monitoring import metrics, prometheus

log = logging.getLogger(__name__)


def sample_once(client: redis.Redis, transport_options: Mapping, queues: Sequence[str] = QUEUES) -> dict[str, int]:
    """Send each queue's depth as a gauge now, and return the depths."""
    depths = queue_depths(client, transport_options, queues)
    for queue, depth in depths.items():
        metrics.queue_depth(queue, depth)
        prometheus.queue_depth(queue, depth)
    return depths


def start_sampler(client: redis.Redis, transport_options: Mapping, interval_s: float) -> threading.Thread:
    """Send every queue's depth as a gauge every `interval_s` seconds, until the process exits."""
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(interval_s):
            try:
                sample_once(client, transport_options)
            except Exception as err:  # Redis away: try again at the next tick
                log.debug("queue depth sample failed: %s", err)

    thread = threading.Thread(target=sample, name="queue-depth", daemon=True)
    thread.start()
    return thread
