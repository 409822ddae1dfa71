"""What the web app builds once per process from its settings: the job store, the broker, the exact
cache, the tenants' keys and usage, and the served model ids. Views reach them through `web()`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

from flask import current_app
from marshmallow import Schema

from cache.exact import ExactCache
from engines.provider import served_models
from jobs import settings_client
from jobs.store import JobStore
from settings import Settings
from tenants.service import Tenants
from webapp.broker import Broker

EXTENSION = "llm_platform"
SchemaType = TypeVar("SchemaType", bound=Schema)


@dataclass(frozen=True)
class WebContext:
    """The web process's settings and the objects built from them."""

    settings: Settings
    store: JobStore
    broker: Broker
    exact_cache: ExactCache
    models: dict[str, str]
    hub_store: JobStore  # the stream hub's own client: a busy request pool never starves it
    tenants: Tenants
    _schemas: dict = field(default_factory=dict, repr=False)

    def schema(self, schema_class: type[SchemaType]) -> SchemaType:
        """The request schema built once with these settings: building one per request cost a third of
        its validation (marshmallow copies every declared field), and loading keeps no state on it."""
        schema = self._schemas.get(schema_class)
        if schema is None:
            schema = self._schemas[schema_class] = schema_class(self.settings)
        return schema

    @classmethod
    def build(cls, settings: Settings) -> "WebContext":
        # A web request gives up on Redis within REDIS_TIMEOUT_S: an outage is a 503, not a hang.
        store = JobStore(settings_client(settings, settings.redis_timeout_s), settings.job_ttl_s)
        # A bad engine setting (ENGINE_BACKEND, *_GGUF_TYPE, *_MODEL) stops the app here, with its message.
        models = served_models(settings)
        exact = ExactCache(store.redis, models, settings.exact_cache_ttl_s, settings.exact_cache_max_entries)
        hub_store = JobStore(settings_client(settings, settings.redis_timeout_s), settings.job_ttl_s)
        return cls(settings, store, Broker(settings), exact, models, hub_store, Tenants.build(settings, store.redis))


def web() -> WebContext:
    """The current app's context."""
    return current_app.extensions[EXTENSION]
