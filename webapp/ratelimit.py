"""Per-key rate limits on job submissions, counted in Redis by Flask-Limiter (429 past the limit)."""
from __future__ import annotations

from flask import Blueprint, Flask, g
from flask_limiter import Limiter

from settings import Settings
from webapp.context import web


def _caller() -> str:
    """The bucket a request counts against: its API key's id (requests without one are exempt)."""
    return g.get("api_key", {}).get("id", "")


def _limit_for_caller() -> str:
    """The key's own limit (`flask keys create --rate-limit`), else `RATE_LIMIT`."""
    return g.get("api_key", {}).get("rate_limit") or web().settings.rate_limit


def init_app(app: Flask, settings: Settings, *submissions: Blueprint) -> Limiter:
    """Limit the POST endpoints of the `submissions` blueprints, one shared budget per API key.

    Without API keys there is no caller to count for (behind a proxy every client has its
    address), so nothing is limited then.
    """
    limiter = Limiter(
        key_func=_caller,
        app=app,
        storage_uri=settings.redis_url,
        # Same fail-fast timeouts as every other Redis call of a web request (an outage is a 503).
        storage_options={"socket_timeout": settings.redis_timeout_s,
                         "socket_connect_timeout": settings.redis_timeout_s},
        strategy="moving-window",
        headers_enabled=True,
        key_prefix="ratelimit",
    )
    limit = limiter.shared_limit(_limit_for_caller, scope="submissions", methods=["POST"],
                                 exempt_when=lambda: "api_key" not in g)
    for blueprint in submissions:
        limit(blueprint)
    return limiter
