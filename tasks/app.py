"""The Celery application; `celery -A tasks.app worker -Q <queue>` runs a worker.

This module is the workers' entry point: building the app here connects the worker's signal
handlers (job lifecycle, metrics), and nothing else imports it but Celery's command line.
"""
from celery import Celery

from celeryconfig import celery_config
from engines.provider import loaded_engine
from jobs.queues import TIERS
from monitoring import celery_signals
from routing.embedder import keep_hub_offline
from settings import get_settings
from tasks import lifecycle
from tasks.context import worker_context


def create_celery_app() -> Celery:
    """The worker's Celery app: configured from the settings (celeryconfig), its tasks and signal handlers loaded."""
    settings = get_settings()
    keep_hub_offline(settings)  # before any model library is imported
    celery = Celery("llm_platform", include=["tasks.routing", "tasks.small", "tasks.large"])
    celery.conf.update(celery_config(settings, worker=True))
    lifecycle.connect_signals()
    celery_signals.connect_worker_signals(lambda: worker_context().store, settings.queue_depth_interval_s,
                                          engines=lambda: {tier: loaded_engine(tier) for tier in TIERS},
                                          metrics_host=settings.metrics_host, metrics_port=settings.metrics_port)
    return celery


app = create_celery_app()
