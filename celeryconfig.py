"""Celery configuration as a plain module (loaded by tasks.app)."""
import os

broker_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
result_backend = broker_url

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]

# One tasks module per queue keeps the routing obvious.
task_routes = {
    "tasks.routing.*": {"queue": "routing"},
    "tasks.small.*": {"queue": "small-queue"},
    "tasks.large.*": {"queue": "large-queue"},
}
task_default_queue = "routing"

# --- Delivery guarantees ------------------------------------------------------------------------
# A task is acknowledged only after it ran, so a killed worker's job is redelivered.
task_acks_late = True
# ...and a prefork child that dies mid-task (OOM, kill -9) makes the broker requeue it.
task_reject_on_worker_lost = True
# Each worker slot holds one message at a time; the rest stay in the queue (and in priority order).
worker_prefetch_multiplier = 1

# Hard time limit per stage in seconds; the soft limit (80%) leaves time to fall back to the other tier.
TIME_LIMITS_S = {
    stage: float(os.environ.get(f"{stage.upper()}_TIME_LIMIT_S", default))
    for stage, default in (("routing", "60"), ("small", "300"), ("large", "600"))
}
TASK_STAGES = {"tasks.routing.route": "routing", "tasks.small.generate": "small", "tasks.large.generate": "large"}
# The threads pool enforces neither limit itself: tasks.generation cancels the engine at the soft limit.
task_annotations = {
    name: {"time_limit": TIME_LIMITS_S[stage], "soft_time_limit": 0.8 * TIME_LIMITS_S[stage]}
    for name, stage in TASK_STAGES.items()
}

# Redis redelivers an unacknowledged message after this long, so it must outlast the longest task.
visibility_timeout = int(os.environ.get("VISIBILITY_TIMEOUT_S", str(int(max(TIME_LIMITS_S.values())) + 60)))
if visibility_timeout <= max(TIME_LIMITS_S.values()):
    raise ValueError(f"VISIBILITY_TIMEOUT_S={visibility_timeout} must exceed the longest time limit "
                     f"{max(TIME_LIMITS_S.values())}s, or running jobs would be delivered twice")

# A job delivered more often than this (it killed its worker each time) fails instead of looping.
max_deliveries = int(os.environ.get("MAX_DELIVERIES", "3"))

# A web request gives up on Redis after this long, so an outage is a 503 within a second;
# workers wait WORKER_REDIS_TIMEOUT_S instead (tasks.lifecycle sets it when a worker starts).
redis_timeout_s = float(os.environ.get("REDIS_TIMEOUT_S", "0.5"))
worker_redis_timeout_s = float(os.environ.get("WORKER_REDIS_TIMEOUT_S", "5"))
redis_socket_timeout = redis_timeout_s
redis_socket_connect_timeout = redis_timeout_s
broker_connection_timeout = redis_timeout_s

broker_transport_options = {
    "visibility_timeout": visibility_timeout,
    # How often a worker looks for messages whose consumer died (kombu scans every Nth sweep; N=1).
    "unacked_restore_interval": float(os.environ.get("UNACKED_RESTORE_INTERVAL_S", "10")),
    "unacked_restore_throttle": 1,
    # One Redis list per priority 0-9, read 0 first (kombu: 0 is most urgent; see tasks.delivery).
    "priority_steps": list(range(10)),
    # A worker on several queues drains them in the order given instead of round robin.
    "queue_order_strategy": "priority",
    "socket_timeout": redis_timeout_s,
    "socket_connect_timeout": redis_timeout_s,
}

# Results are read through the job API for a day, then Redis may forget them.
result_expires = int(os.environ.get("JOB_TTL_S", "86400"))
# A worker past this resident size (KiB) finishes its tasks and exits, and supervisord starts a fresh
# one; prefork applies it per child, the threads pool through tasks.lifecycle.
worker_max_memory_per_child = int(os.environ.get("WORKER_MAX_MEMORY_KB", str(6 * 1024 * 1024)))
broker_connection_retry_on_startup = True
worker_send_task_events = True  # Flower shows tasks live
task_send_sent_event = True
