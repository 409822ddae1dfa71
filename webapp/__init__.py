"""The Flask web app: validates requests and queues them on Celery."""
from __future__ import annotations

from typing import Optional

from flask import Flask

from heap import freeze_start_up_objects
from monitoring.flask_hooks import register_request_metrics
from settings import Settings, get_settings, is_loopback
from webapp.context import EXTENSION, WebContext
from webapp.errors import register_error_handlers
from webapp.metrics import bp as metrics_bp
from webapp.submission import mark_request_start
from webapp.tokens import load_tokenizers


def refuse_open_access(settings: Settings) -> None:
    """Stop at start rather than serve every job to anyone: API keys off on an address other machines
    reach is refused unless ALLOW_OPEN_ACCESS says so."""
    if not settings.api_keys_required and not is_loopback(settings.host) and not settings.allow_open_access:
        raise ValueError(f"HOST={settings.host} is reachable from other machines but API keys are off: anyone "
                         "could submit, read and cancel jobs. Set API_KEYS_REQUIRED=1 (and create keys with "
                         "`flask keys create`), or ALLOW_OPEN_ACCESS=1 to serve without keys on purpose.")


def start_serving(app: Flask) -> None:
    """The start-up of a process that serves the app (gunicorn's `post_worker_init`): the prompt
    tokenizers loaded before the first request, and the background work of writing usage through to
    SQL. Apps built by `flask` commands and tests run none. Last, what start-up built is frozen out of
    the garbage collector's full collections (heap.py): each one otherwise held up every request."""
    context = app.extensions[EXTENSION]
    load_tokenizers(context.settings)
    context.tenants.start_flushing(context.settings)
    freeze_start_up_objects()


def create_app(settings: Optional[Settings] = None, test_config: Optional[dict] = None) -> Flask:
    """App factory: `settings` (default: this process's) configure everything; `test_config` is Flask's own."""
    settings = settings or get_settings()
    refuse_open_access(settings)
    app = Flask(__name__)
    app.config.from_mapping(MAX_CONTENT_LENGTH=settings.max_body_bytes, JSON_SORT_KEYS=False)
    if test_config:
        app.config.update(test_config)
    app.extensions[EXTENSION] = WebContext.build(settings)
    app.json.sort_keys = False

    from webapp import (apikeys, cli, dashboard, embeddings, feedback, health, jobs, openai_api, openapi, playground,
                        ratelimit, recent, stream, usage)

    apikeys.init_app(app)  # before the limiter: it counts per key
    # Every route that queues a job (and feedback on one) shares one budget; every route that reads or cancels, another.
    ratelimit.init_app(app, settings, submissions=(jobs.bp, openai_api.bp, embeddings.bp, feedback.bp),
                       reads=(jobs.bp, stream.bp, recent.bp, openai_api.bp, usage.bp, dashboard.bp))
    for blueprint in (jobs.bp, health.bp, stream.bp, recent.bp, usage.bp, openai_api.bp, embeddings.bp, playground.bp,
                      openapi.bp, dashboard.bp, feedback.bp):
        app.register_blueprint(blueprint)
    cli.init_app(app)
    app.before_request(mark_request_start)  # every request's deadlines count from its start
    register_error_handlers(app)
    register_request_metrics(app)
    app.register_blueprint(metrics_bp)  # GET /metrics: Prometheus (webapp/metrics.py)
    return app
