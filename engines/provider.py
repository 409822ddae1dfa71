"""One engine per tier per process, created on first use (never before Celery forks)."""
from __future__ import annotations

import os
import threading

from engines.base import Engine
from engines.models import resolve_model

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def get_engine(tier: str) -> Engine:
    """The tier's engine, loading the model on the first call in this process."""
    with _lock:
        if tier not in _engines:
            from engines.mlx_engine import MLXEngine

            spec = resolve_model(tier)
            max_batch = int(os.environ.get("ENGINE_MAX_BATCH", "8"))
            _engines[tier] = MLXEngine(spec.load_path, spec.model_id, max_batch=max_batch)
        return _engines[tier]
