"""The Flask web app: validates requests and queues them on Celery."""
from __future__ import annotations

import os
from typing import Optional

from flask import Flask

from monitoring.flask_hooks import register_request_metrics
from webapp.errors import register_error_handlers


def create_app(test_config: Optional[dict] = None) -> Flask:
    """App factory; `test_config` overrides settings read from the environment."""
    app = Flask(__name__)
    app.config.from_mapping(
        WAIT_TIMEOUT_S=float(os.environ.get("WAIT_TIMEOUT_S", "60")),
        MAX_CONTENT_LENGTH=int(os.environ.get("MAX_BODY_BYTES", str(64 * 1024))),
        JSON_SORT_KEYS=False,
    )
    if test_config:
        app.config.update(test_config)
    app.json.sort_keys = False

    from webapp import health, jobs

    app.register_blueprint(jobs.bp)
    app.register_blueprint(health.bp)
    register_error_handlers(app)
    register_request_metrics(app)
    return app
