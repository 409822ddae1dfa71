"""Celery configuration as a plain module (loaded by tasks.app and the web app's broker), from `settings`."""
from jobs.queues import QUEUES, ROUTE_TASK, ROUTING_QUEUE, generation_task, tier_queue
from settings import TIERS, get_settings

_settings = get_settings()

broker_url = _settings.redis_url
result_backend = broker_url

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]

# One tasks module per queue keeps the routing obvious.
task_routes = {
    "tasks.routing.*": {"queue": ROUTING_QUEUE},
    **{f"tasks.{tier}.*": {"queue": tier_queue(tier)} for tier in TIERS},
}
task_default_queue = ROUTING_QUEUE
assert set(route["queue"] for route in task_routes.values()) == set(QUEUES)

# --- Delivery guarantees ------------------------------------------------------------------------
# A task is acknowledged only after it ran, so a killed worker's job is redelivered.
task_acks_late = True
# ...and a prefork child that dies mid-task (OOM, kill -9) makes the broker requeue it.
task_reject_on_worker_lost = True
# Each worker slot holds one message at a time; the rest stay in the queue (and in priority order).
worker_prefetch_multiplier = 1

# Hard time limit per stage; the soft limit (80%) leaves time to fall back to the other tier.
# The threads pool enforces neither limit itself: tasks.generation cancels the engine at the soft limit.
_TASK_STAGES = {ROUTE_TASK: "routing", **{generation_task(tier): tier for tier in TIERS}}
task_annotations = {
    name: {"time_limit": _settings.time_limits()[stage], "soft_time_limit": 0.8 * _settings.time_limits()[stage]}
    for name, stage in _TASK_STAGES.items()
}

# A job delivered more often than this (it killed its worker each time) fails instead of looping.
max_deliveries = _settings.max_deliveries

# A web request gives up on Redis after this long, so an outage is a 503 within a second;
# workers wait WORKER_REDIS_TIMEOUT_S instead (tasks.lifecycle sets it when a worker starts).
redis_timeout_s = _settings.redis_timeout_s
worker_redis_timeout_s = _settings.worker_redis_timeout_s
redis_socket_timeout = redis_timeout_s
redis_socket_connect_timeout = redis_timeout_s
broker_connection_timeout = redis_timeout_s

broker_transport_options = {
    # Redis redelivers an unacknowledged message after this long, so it outlasts the longest task.
    "visibility_timeout": _settings.visibility_timeout(),
    # How often a worker looks for messages whose consumer died (kombu scans every Nth sweep; N=1).
    "unacked_restore_interval": _settings.unacked_restore_interval_s,
    "unacked_restore_throttle": 1,
    # One Redis list per priority 0-9, read 0 first (kombu: 0 is most urgent; see jobs.queues).
    "priority_steps": list(range(10)),
    # A worker on several queues drains them in the order given instead of round robin.
    "queue_order_strategy": "priority",
    "socket_timeout": redis_timeout_s,
    "socket_connect_timeout": redis_timeout_s,
}

# Results are read through the job API for as long as job records are kept.
result_expires = _settings.job_ttl_s
# A worker past this resident size (KiB) finishes its tasks and exits, and supervisord starts a fresh
# one; prefork applies it per child, the threads pool through tasks.lifecycle.
worker_max_memory_per_child = _settings.worker_max_memory_kb
broker_connection_retry_on_startup = True
worker_send_task_events = True  # Flower shows tasks live
task_send_sent_event = True
