"""Per-key rate limits on job submissions, counted in Redis by Flask-Limiter (429 past the limit)."""
from __future__ import annotations

from flask import Blueprint, Flask, current_app, g
from flask_limiter import Limiter

from tasks.app import app as celery_app


def _caller() -> str:
    """The bucket a request counts against: its API key's id (requests without one are exempt)."""
    return g.get("api_key", {}).get("id", "")


def _limit_for_caller() -> str:
    """The key's own limit (`flask keys create --rate-limit`), else `RATE_LIMIT`."""
    return g.get("api_key", {}).get("rate_limit") or current_app.config["RATE_LIMIT"]


def init_app(app: Flask, submissions: Blueprint) -> Limiter:
    """Limit the POST endpoints of `submissions`, one shared budget per API key.

    Without API keys there is no caller to count for (behind a proxy every client has its
    address), so nothing is limited then.
    """
    conf = celery_app.conf
    limiter = Limiter(
        key_func=_caller,
        app=app,
        storage_uri=conf.broker_url,
        # Same fail-fast timeouts as every other Redis call of a web request (an outage is a 503).
        storage_options={"socket_timeout": conf.redis_socket_timeout,
                         "socket_connect_timeout": conf.redis_socket_connect_timeout},
        strategy="moving-window",
        headers_enabled=True,
        key_prefix="ratelimit",
    )
    limiter.shared_limit(_limit_for_caller, scope="submissions", methods=["POST"],
                         exempt_when=lambda: "api_key" not in g)(submissions)
    return limiter
