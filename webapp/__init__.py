"""The Flask web app: validates requests and queues them on Celery."""
from __future__ import annotations

import os
from typing import Optional

from flask import Flask

from engines.provider import served_models
from webapp.backpressure import queue_limits_from_env
from monitoring.flask_hooks import register_request_metrics
from webapp.errors import register_error_handlers


def create_app(test_config: Optional[dict] = None) -> Flask:
    """App factory; `test_config` overrides settings read from the environment."""
    app = Flask(__name__)
    app.config.from_mapping(
        WAIT_TIMEOUT_S=float(os.environ.get("WAIT_TIMEOUT_S", "60")),
        MAX_CONTENT_LENGTH=int(os.environ.get("MAX_BODY_BYTES", str(64 * 1024))),
        JSON_SORT_KEYS=False,
        API_KEYS_REQUIRED=os.environ.get("API_KEYS_REQUIRED", "0") == "1",
        RATE_LIMIT=os.environ.get("RATE_LIMIT", "60/minute"),
        QUEUE_LIMITS=queue_limits_from_env(),
        QUEUE_RETRY_AFTER_S=int(os.environ.get("QUEUE_RETRY_AFTER_S", "5")),
    )
    if test_config:
        app.config.update(test_config)
    # A bad engine setting (ENGINE_BACKEND, *_GGUF_TYPE, *_MODEL) stops the app here, with its
    # message, rather than failing every request that keys the cache by model.
    served_models()
    app.json.sort_keys = False

    from webapp import apikeys, cli, health, jobs, openai_api, openapi, playground, ratelimit, recent, stream

    apikeys.init_app(app)  # before the limiter: it counts per key
    ratelimit.init_app(app, jobs.bp)
    app.register_blueprint(jobs.bp)
    app.register_blueprint(health.bp)
    for blueprint in (stream.bp, recent.bp, openai_api.bp, playground.bp, openapi.bp):
        app.register_blueprint(blueprint)
    cli.init_app(app)
    register_error_handlers(app)
    register_request_metrics(app)
    return app
