"""A bounded set of cache entries in Redis: each entry expires after a TTL, the oldest go first when full."""
from __future__ import annotations

import json
import time
from typing import Iterable, Optional

import redis


class BoundedIndex:
    """Entries live under `<prefix>:entry:<member>` with a TTL and are listed in the sorted set
    `<prefix>:index` by the time they were stored. Storing trims the expired and, past
    `max_entries`, the oldest. An entry may carry a vector, kept in the hash `<prefix>:vectors`.
    """

    def __init__(self, client: redis.Redis, prefix: str, ttl_s: int, max_entries: int) -> None:
        self.redis = client
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.index_key = f"{prefix}:index"
        self.vectors_key = f"{prefix}:vectors"

    def entry_key(self, member: str) -> str:
        return f"{self.prefix}:entry:{member}"

    def get(self, member: str) -> Optional[dict]:
        raw = self.redis.get(self.entry_key(member))
        return json.loads(raw) if raw else None

    def put(self, member: str, entry: dict, vector: Optional[bytes] = None) -> None:
        """Store an entry (replacing one of the same member), then trim the index back to its bounds."""
        now = time.time()
        pipe = self.redis.pipeline()
        pipe.set(self.entry_key(member), json.dumps(entry), ex=self.ttl_s)
        if vector is not None:
            pipe.hset(self.vectors_key, member, vector)
        pipe.zadd(self.index_key, {member: now})
        pipe.zrangebyscore(self.index_key, "-inf", now - self.ttl_s)
        pipe.zcard(self.index_key)
        *_, expired, size = pipe.execute()
        overflow = size - len(expired) - self.max_entries
        oldest = self.redis.zrange(self.index_key, len(expired), len(expired) + overflow - 1) if overflow > 0 else []
        self.remove([m.decode() for m in expired + oldest])

    def remove(self, members: Iterable[str]) -> None:
        members = list(members)
        for start in range(0, len(members), 500):
            chunk = members[start:start + 500]
            pipe = self.redis.pipeline()
            pipe.zrem(self.index_key, *chunk)
            pipe.hdel(self.vectors_key, *chunk)
            pipe.delete(*[self.entry_key(m) for m in chunk])
            pipe.execute()

    def members_after(self, score: float) -> list[tuple[str, float]]:
        """Members stored at or after `score` (a timestamp), oldest first."""
        return [(m.decode(), s) for m, s in self.redis.zrangebyscore(self.index_key, score, "+inf", withscores=True)]

    def all_members(self) -> list[tuple[str, float]]:
        return [(m.decode(), s) for m, s in self.redis.zrange(self.index_key, 0, -1, withscores=True)]

    def vectors(self, members: list[str]) -> list[Optional[bytes]]:
        return self.redis.hmget(self.vectors_key, members) if members else []

    def size(self) -> int:
        return self.redis.zcard(self.index_key)

    def clear(self) -> None:
        self.remove(m for m, _ in self.all_members())
