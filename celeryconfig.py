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

# A task is acknowledged only after it ran, so a killed worker's job is redelivered.
task_acks_late = True
# ...and a worker that dies mid-task (OOM, kill -9) makes the broker requeue it.
task_reject_on_worker_lost = True
# Each worker slot holds one message at a time; the rest stay in the queue for other workers.
worker_prefetch_multiplier = 1
# Redis redelivers an unacknowledged message after this long: above the longest hard time limit.
broker_transport_options = {"visibility_timeout": int(os.environ.get("VISIBILITY_TIMEOUT_S", "3600"))}
# Results are read through the job API for a day, then Redis may forget them.
result_expires = int(os.environ.get("JOB_TTL_S", "86400"))
broker_connection_retry_on_startup = True
worker_send_task_events = True  # Flower shows tasks live
task_send_sent_event = True
