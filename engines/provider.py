"""One engine per tier per process, created on first use (never before Celery forks).

`ENGINE_BACKEND` picks the implementation: `mlx` (default) or `llamacpp` (optional,
needs `pip install -r requirements-llamacpp.txt`). `ENGINE_MAX_BATCH` is how many
requests share one decode step (set it to the worker's concurrency).
"""
from __future__ import annotations

import os
import threading

from engines.base import Engine
from engines.models import resolve_model

BACKENDS = ("mlx", "llamacpp")

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def backend_name() -> str:
    """The configured engine backend."""
    name = os.environ.get("ENGINE_BACKEND", "mlx").strip().lower() or "mlx"
    if name not in BACKENDS:
        raise ValueError(f"ENGINE_BACKEND={name!r}: choose one of {', '.join(BACKENDS)}")
    return name


def max_batch() -> int:
    return int(os.environ.get("ENGINE_MAX_BATCH", "8"))


def create_engine(tier: str) -> Engine:
    """A new engine for `tier` with the configured backend."""
    if backend_name() == "llamacpp":
        from engines.llamacpp_engine import LlamaCppEngine, resolve_gguf

        path, model_id = resolve_gguf(tier)
        return LlamaCppEngine(path, model_id, max_batch=max_batch())
    from engines.mlx_engine import MLXEngine

    spec = resolve_model(tier)
    return MLXEngine(spec.load_path, spec.model_id, max_batch=max_batch())


def get_engine(tier: str) -> Engine:
    """The tier's engine, loading the model on the first call in this process."""
    with _lock:
        if tier not in _engines:
            _engines[tier] = create_engine(tier)
        return _engines[tier]
