"""One engine per tier per process, created on first use (never before Celery forks).

`ENGINE_BACKEND` picks the implementation: `mlx`, `llamacpp`, or `auto` (default): MLX on
Apple Silicon, llama.cpp elsewhere when llama-cpp-python is installed (`make install` builds
it), else MLX. On Linux CPUs llama.cpp decodes one stream ~15x faster than MLX and batches
better (docs/benchmarks.md). `ENGINE_MAX_BATCH` is how many requests share one decode step
(set it to the worker's concurrency).
"""
from __future__ import annotations

import functools
import importlib.util
import os
import platform
import sys
import threading

from pathlib import Path

from engines.base import Engine
from engines.models import TIERS, resolve_model

BACKENDS = ("auto", "mlx", "llamacpp")

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def backend_name() -> str:
    """The engine backend in use: `mlx` or `llamacpp`."""
    name = os.environ.get("ENGINE_BACKEND", "auto").strip().lower() or "auto"
    if name not in BACKENDS:
        raise ValueError(f"ENGINE_BACKEND={name!r}: choose one of {', '.join(BACKENDS)}")
    return auto_backend() if name == "auto" else name


def auto_backend() -> str:
    if sys.platform == "darwin" and platform.machine() == "arm64":
        return "mlx"
    return "llamacpp" if importlib.util.find_spec("llama_cpp") is not None else "mlx"


def max_batch() -> int:
    return int(os.environ.get("ENGINE_MAX_BATCH", "8"))


def served_spec(tier: str) -> tuple[str, Path]:
    """The model id clients see for `tier` and the file or folder it loads, preparing nothing."""
    if backend_name() == "llamacpp":
        from engines.llamacpp_models import resolve_gguf

        gguf = resolve_gguf(tier, prepare=False)
        return gguf.model_id, Path(gguf.path)
    spec = resolve_model(tier, prepare=False)
    return spec.model_id, Path(spec.load_path)


@functools.lru_cache(maxsize=1)
def served_models() -> dict[str, str]:
    """Model id per tier; read once, since changing a model means restarting the processes."""
    return {tier: served_spec(tier)[0] for tier in TIERS}


def create_engine(tier: str) -> Engine:
    """A new engine for `tier` with the configured backend."""
    if backend_name() == "llamacpp":
        from engines.llamacpp_engine import LlamaCppEngine
        from engines.llamacpp_models import resolve_gguf

        spec = resolve_gguf(tier)
        return LlamaCppEngine(spec.path, spec.model_id, max_batch(), spec.tokenizer_gguf)
    from engines.mlx_engine import MLXEngine

    spec = resolve_model(tier)
    return MLXEngine(spec.load_path, spec.model_id, max_batch=max_batch())


def get_engine(tier: str) -> Engine:
    """The tier's engine, loading the model on the first call in this process."""
    with _lock:
        if tier not in _engines:
            _engines[tier] = create_engine(tier)
        return _engines[tier]
