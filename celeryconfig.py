"""Celery configuration, built from the settings: the workers' app (tasks.app) and the web app's
broker (webapp.broker) load `celery_config(settings)` into their Celery apps."""
from jobs.queues import QUEUES, ROUTE_TASK, ROUTING_QUEUE, generation_task, tier_queue
from jobs.sentinel import is_sentinel
from settings import TIERS, Settings


def celery_config(settings: Settings, worker: bool = False) -> dict:
    """Celery's settings for `settings`: a worker's (`worker`) or the web app's that publishes."""
    # One tasks module per queue keeps the routing obvious.
    task_routes = {"tasks.routing.*": {"queue": ROUTING_QUEUE},
                   **{f"tasks.{tier}.*": {"queue": tier_queue(tier)} for tier in TIERS}}
    assert {route["queue"] for route in task_routes.values()} == set(QUEUES)
    limits = settings.time_limits()
    stages = {ROUTE_TASK: "routing", **{generation_task(tier): tier for tier in TIERS}}
    # A web request gives up on Redis after REDIS_TIMEOUT_S, so an outage is a 503 within a second;
    # workers wait WORKER_REDIS_TIMEOUT_S instead: a slow moment must not fail a job.
    timeout = settings.worker_redis_timeout_s if worker else settings.redis_timeout_s
    return {
        "broker_url": settings.redis_url,
        "result_backend": settings.redis_url,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_routes": task_routes,
        "task_default_queue": ROUTING_QUEUE,
        # Delivery: a task is acknowledged only after it ran, so a killed worker's job is redelivered,
        # and a prefork child that dies mid-task (OOM, kill -9) makes the broker requeue it.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # Each worker slot holds one message at a time; the rest stay in the queue (in priority order).
        "worker_prefetch_multiplier": 1,
        # Hard time limit per stage; the soft limit (80%) leaves time to fall back to the other tier.
        # The threads pool enforces neither: tasks.generation cancels the engine at the soft limit.
        "task_annotations": {name: {"time_limit": limits[stage], "soft_time_limit": 0.8 * limits[stage]}
                             for name, stage in stages.items()},
        # A job delivered more often than this (it killed its worker each time) fails instead of looping.
        "max_deliveries": settings.max_deliveries,
        "redis_socket_timeout": timeout,
        "redis_socket_connect_timeout": timeout,
        "broker_connection_timeout": timeout,
        # With Sentinel (a sentinel:// REDIS_URL) both ask the sentinels for this master.
        "result_backend_transport_options": _sentinel_options(settings),
        "broker_transport_options": {
            **_sentinel_options(settings),
            # Redis redelivers an unacknowledged message after this long: it outlasts the longest task.
            "visibility_timeout": settings.visibility_timeout(),
            # How often a worker looks for messages whose consumer died (kombu scans every Nth sweep; N=1).
            "unacked_restore_interval": settings.unacked_restore_interval_s,
            "unacked_restore_throttle": 1,
            # One Redis list per priority 0-9, read 0 first (kombu: 0 is most urgent; see jobs.queues).
            "priority_steps": list(range(10)),
            # A worker on several queues drains them in the order given instead of round robin.
            "queue_order_strategy": "priority",
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
        },
        # Results are read through the job API for as long as job records are kept.
        "result_expires": settings.job_ttl_s,
        # A worker past this resident size (KiB) finishes its tasks and exits, and supervisord starts a
        # fresh one; prefork applies it per child, the threads pool through tasks.lifecycle.
        "worker_max_memory_per_child": settings.worker_max_memory_kb,
        "broker_connection_retry_on_startup": True,
        # A tier worker's threads: its engine's batch and the jobs waiting in the engine's queue (a
        # worker started with --concurrency, as the routing worker is, keeps that).
        "worker_concurrency": settings.engine_max_batch + settings.engine_queue_ahead,
        "worker_send_task_events": True,  # Flower shows tasks live, from the moment a worker receives them
        # No `task-sent` event: it cost each submission a publish and Flower a message to handle, for a state
        # (queued) that the queue depths already show (Flower's Broker page, llm_queue_depth).
        "task_send_sent_event": False,
    }


def _sentinel_options(settings: Settings) -> dict:
    return {"master_name": settings.redis_sentinel_master} if is_sentinel(settings.redis_url) else {}
