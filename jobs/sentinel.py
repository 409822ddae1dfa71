"""Redis behind Sentinel: `REDIS_URL` may name the sentinels instead of one server, in Celery's form
`sentinel://[:password@]host:port[/db];sentinel://host:port;...`, with the master's name in
`REDIS_SENTINEL_MASTER`. Every client then asks the sentinels for the current master, and asks
again when a connection to it fails, so a failover is followed without a restart.

The job store's clients come from `sentinel_client`, Celery's broker and result backend take the
URL as it is (with `master_name` in their transport options, celeryconfig), and the rate limiter
gets it in the `limits` library's form (`limits_uri`).

Replication is asynchronous: a job accepted just before the master dies may not have reached the
replica that takes over. `replicated` waits until replicas have everything written so far, which the
web app does before it answers a submission (REDIS_MIN_REPLICAS).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

SCHEME = "sentinel://"


def is_sentinel(url: str) -> bool:
    """Whether `url` names sentinels rather than one Redis server."""
    return url.startswith(SCHEME)


@dataclass(frozen=True)
class SentinelURL:
    """The sentinels' addresses, the database and the master's password, read from a `sentinel://` URL."""

    sentinels: tuple[tuple[str, int], ...]
    db: int
    password: Optional[str]

    @classmethod
    def parse(cls, url: str) -> "SentinelURL":
        parts = [urlsplit(part.strip()) for part in url.split(";") if part.strip()]
        if not parts or any(f"{part.scheme}://" != SCHEME or not part.hostname for part in parts):
            raise ValueError(f"a Sentinel REDIS_URL is sentinel://host:port[/db];sentinel://host:port..., not {url!r}")
        dbs = {int(part.path.strip("/")) for part in parts if part.path.strip("/")}  # one may name it for all
        if len(dbs) > 1:
            raise ValueError(f"the sentinels of REDIS_URL name different databases: {sorted(dbs)}")
        password = next((part.password for part in parts if part.password), None)
        return cls(tuple((part.hostname, part.port or 26379) for part in parts), dbs.pop() if dbs else 0, password)


class SentinelBlockingConnectionPool(SentinelConnectionPool, redis.BlockingConnectionPool):
    """Connections to the current master that, like jobs.redis_client's, wait for a free one when all are
    busy (redis-py's Sentinel pool raises instead)."""


def sentinel_client(url: str, master: str, timeout_s: float, max_connections: int, wait_s: float) -> redis.Redis:
    """A client of the master the sentinels of `url` name `master`, giving up after `timeout_s`."""
    parsed = SentinelURL.parse(url)
    timeouts = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
    # redis-py retries a sentinel 10 times with backoff (1.5 s each when it is down): once, then the next.
    sentinels = Sentinel(list(parsed.sentinels), sentinel_kwargs={**timeouts, "retry": Retry(NoBackoff(), 1)})
    return sentinels.master_for(master, connection_pool_class=SentinelBlockingConnectionPool, db=parsed.db,
                                password=parsed.password, max_connections=max_connections, timeout=wait_s,
                                **timeouts)


def limits_uri(url: str, master: str) -> str:
    """The `limits` library's form of a Sentinel URL (its database goes in the storage options)."""
    parsed = SentinelURL.parse(url)
    auth = f":{parsed.password}@" if parsed.password else ""
    hosts = ",".join(f"{host}:{port}" for host, port in parsed.sentinels)
    return f"redis+sentinel://{auth}{hosts}/{master}"


REPLICATION_MARK = "replication:mark"


def replicated(client: redis.Redis, replicas: int, timeout_ms: int) -> bool:
    """Whether `replicas` replicas have acknowledged every write made so far, by any client, within `timeout_ms`.

    Redis's WAIT counts the writes of its own connection: one write here, after the others, makes it
    cover them too (the replication stream is one, in order).
    """
    pipe = client.pipeline(transaction=False)
    pipe.incr(REPLICATION_MARK)
    pipe.execute_command("WAIT", replicas, timeout_ms)
    return int(pipe.execute()[1]) >= replicas
