"""The tenants' objects a web process builds once from its settings: keys, the usage meter and ledger."""
from __future__ import annotations

from dataclasses import dataclass

import redis

from settings import Settings
from tenants.database import database_engine
from tenants.keys import KeyStore
from tenants.ledger import UsageLedger, start_flushing
from tenants.meter import UsageMeter


@dataclass(frozen=True)
class Tenants:
    """API keys, usage counting and the usage ledger, on one SQL database and one Redis."""

    keys: KeyStore
    meter: UsageMeter
    ledger: UsageLedger

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
