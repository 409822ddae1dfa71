"""The Celery application; `celery -A tasks.app worker -Q <queue>` runs a worker."""
from celery import Celery

app = Celery("llm_platform", include=["tasks.routing", "tasks.small", "tasks.large", "tasks.lifecycle",
                                      "cache.hooks", "monitoring.celery_signals"])
app.config_from_object("celeryconfig")
