"""Per-key rate limits, counted in Redis by Flask-Limiter (429 past the limit): one budget for the
routes that queue jobs, one for those that read or cancel them."""
from __future__ import annotations

from flask import Blueprint, Flask, g
from flask_limiter import Limiter, RateLimitExceeded

from jobs.sentinel import SentinelURL, is_sentinel, limits_uri
from settings import Settings
from webapp.context import web
from webapp.errors import error_response


def _caller() -> str:
    """The bucket a request counts against: its API key's id (requests without one are exempt)."""
    return g.get("api_key", {}).get("id", "")


def _limit_for_caller() -> str:
    """The key's own limit (`flask keys create --rate-limit`), else `RATE_LIMIT`."""
    return g.get("api_key", {}).get("rate_limit") or web().settings.rate_limit


def _refused(err: RateLimitExceeded):
    """429 `rate_limited` with `Retry-After`: the limit's window, by when a moving window has room again."""
    body, status = error_response(429, "rate_limited", f"rate limit exceeded: {err.description}")
    return body, status, {"Retry-After": str(int(err.limit.limit.get_expiry()))}


def init_app(app: Flask, settings: Settings, submissions: tuple[Blueprint, ...],
             reads: tuple[Blueprint, ...]) -> Limiter:
    """Limit the POST endpoints of `submissions` to one shared budget per API key (`RATE_LIMIT` or the
    key's own), and the GET and DELETE endpoints of `reads` to another (`READ_RATE_LIMIT`: polling
    a job costs a request each time, so it gets a budget of its own).

    Without API keys there is no caller to count for (behind a proxy every client has its
    address), so nothing is limited then.
    """
    limiter = Limiter(
        key_func=_caller,
        app=app,
        **_storage(settings),
        strategy="moving-window",
        # No X-RateLimit-* headers: they cost a second Redis round trip on every request (a third of
        # what a key adds to a cache hit). A refusal still says when to retry (below).
        headers_enabled=False,
        key_prefix="ratelimit",
    )
    app.register_error_handler(RateLimitExceeded, _refused)
    keyless = lambda: "api_key" not in g  # noqa: E731
    submit = limiter.shared_limit(_limit_for_caller, scope="submissions", methods=["POST"], exempt_when=keyless)
    read = limiter.shared_limit(lambda: web().settings.read_rate_limit, scope="reads", methods=["GET", "DELETE"],
                                exempt_when=keyless)
    for blueprint in submissions:
        submit(blueprint)
    for blueprint in reads:
        read(blueprint)
    return limiter


def _storage(settings: Settings) -> dict:
    """Where the limiter counts: REDIS_URL, in the `limits` library's form when it names sentinels."""
    # Same fail-fast timeouts as every other Redis call of a web request (an outage is a 503).
    options = {"socket_timeout": settings.redis_timeout_s, "socket_connect_timeout": settings.redis_timeout_s}
    if not is_sentinel(settings.redis_url):
        return {"storage_uri": settings.redis_url, "storage_options": options}
    return {"storage_uri": limits_uri(settings.redis_url, settings.redis_sentinel_master),
            "storage_options": {**options, "db": SentinelURL.parse(settings.redis_url).db}}
