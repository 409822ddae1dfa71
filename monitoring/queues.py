"""Queue depth: the length of each Celery queue's Redis lists, sampled on a timer."""
from __future__ import annotations

import logging
import os
import threading

from kombu.transport.redis import Channel

from monitoring import metrics

log = logging.getLogger(__name__)


def queue_names() -> list[str]:
    """The queues in the Celery configuration: every routed queue plus the default."""
    import celeryconfig

    routed = {route["queue"] for route in celeryconfig.task_routes.values()}
    return sorted(routed | {celeryconfig.task_default_queue})


def redis_lists(queue: str) -> list[str]:
    """Kombu keeps a queue's messages of each priority step in its own list (`<queue>\\x06\\x163`, ...)."""
    return [queue] + [f"{queue}{Channel.sep}{step}" for step in Channel.priority_steps if step]


def queue_depths(client) -> dict[str, int]:
    """Messages waiting in each queue, all priorities summed."""
    names = queue_names()
    pipe = client.pipeline(transaction=False)
    for name in names:
        for key in redis_lists(name):
            pipe.llen(key)
    lengths = iter(pipe.execute())
    return {name: sum(next(lengths) for _ in redis_lists(name)) for name in names}


def start_sampler(client, interval_s: float | None = None) -> threading.Thread:
    """Send every queue's depth as a gauge every `QUEUE_DEPTH_INTERVAL_S` seconds (5), until exit."""
    interval_s = interval_s or float(os.environ.get("QUEUE_DEPTH_INTERVAL_S", "5"))
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(interval_s):
            try:
                for queue, depth in queue_depths(client).items():
                    metrics.queue_depth(queue, depth)
            except Exception as err:  # Redis away: try again at the next tick
                log.debug("queue depth sample failed: %s", err)

    thread = threading.Thread(target=sample, name="queue-depth", daemon=True)
    thread.start()
    return thread
