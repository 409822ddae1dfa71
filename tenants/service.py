"""The tenants' objects a web process builds once from its settings: keys, the usage meter and ledger."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Optional

import redis

from settings import Settings
from tenants.database import database_engine
from tenants.keys import CACHE_PREFIX, UNKNOWN, KeyStore, digest
from tenants.ledger import UsageLedger, start_flushing
from tenants.meter import MONTH_PREFIX, UsageMeter, usage_month

# A cached key's record and, when it has a budget, its month's tokens: one round trip for both.
_IDENTIFY = """
local cached = redis.call('get', KEYS[1])
if (not cached) or cached == '' then return {cached} end
local budget = cjson.decode(cached)['monthly_token_budget']
if budget == nil or budget == cjson.null then return {cached} end
return {cached, redis.call('get', ARGV[1] .. cjson.decode(cached)['id'] .. ARGV[2])}
"""


@dataclass(frozen=True)
class Tenants:
    """API keys, usage counting and the usage ledger, on one SQL database and one Redis."""

    keys: KeyStore
    meter: UsageMeter
    ledger: UsageLedger
    _identify: object = field(default=None, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_identify", self.keys.redis.register_script(_IDENTIFY))

    def identify(self, key: str) -> tuple[Optional[dict], Optional[int]]:
        """The live key's record (None: unknown or revoked) and, for a key with a budget, the tokens it
        used this month (None when not known without more work: `UsageLedger.month_tokens` builds it)."""
        reply = self._identify(keys=[CACHE_PREFIX + digest(key)], args=[MONTH_PREFIX, f":{usage_month()}"])
        cached = reply[0] if reply else None
        if cached is None:
            return self.keys.lookup(key), None  # not cached: from SQL, cached for the next call
        if cached == UNKNOWN:
            return None, None
        used = reply[1] if len(reply) > 1 else None
        return json.loads(cached), int(used) if used is not None else None

    @classmethod
    def build(cls, settings: Settings, client: redis.Redis) -> "Tenants":
        engine = database_engine(settings.database())
        return cls(KeyStore(engine, client, settings.api_key_cache_s), UsageMeter(client), UsageLedger(engine, client))

    def start_flushing(self, settings: Settings) -> None:
        """Write usage through to SQL every USAGE_FLUSH_S from this process (once per database and Redis;
        never when it is 0)."""
        if not settings.usage_flush_s:
            return
        start_flushing(self.ledger, settings.usage_flush_s, f"{settings.database()} {settings.redis_url}")
