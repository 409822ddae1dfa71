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
import platform
import sys
import threading

from pathlib import Path

from engines.base import Engine
from engines.blas import enable_fast_blas
from engines.models import TIERS, resolve_model
from settings import Settings, get_settings

BACKENDS = ("auto", "mlx", "llamacpp")

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def backend_name(settings: Settings | None = None) -> str:
    """The engine backend in use: `mlx` or `llamacpp`."""
    name = (settings or get_settings()).engine_backend.strip().lower() or "auto"
    if name not in BACKENDS:
        raise ValueError(f"ENGINE_BACKEND={name!r}: choose one of {', '.join(BACKENDS)}")
    return auto_backend() if name == "auto" else name


def auto_backend() -> str:
    if sys.platform == "darwin" and platform.machine() == "arm64":
        return "mlx"
    return "llamacpp" if _llama_cpp_installed() else "mlx"


@functools.cache  # the validation of every request asks; importlib's answer cannot change while the process runs
def _llama_cpp_installed() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def served_spec(tier: str, settings: Settings | None = None) -> tuple[str, Path]:
    """The model id clients see for `tier` and the file or folder it loads, preparing nothing."""
    settings = settings or get_settings()
    if backend_name(settings) == "llamacpp":
        from engines.llamacpp_models import resolve_gguf

        gguf = resolve_gguf(tier, prepare=False, settings=settings)
        return gguf.model_id, Path(gguf.path)
    spec = resolve_model(tier, prepare=False, settings=settings)
    return spec.model_id, Path(spec.load_path)


def served_models(settings: Settings | None = None) -> dict[str, str]:
    """Model id per tier; resolved once per settings object, since changing a model means a restart."""
    return _served_models(settings or get_settings())


@functools.lru_cache(maxsize=8)
def _served_models(settings: Settings) -> dict[str, str]:
    return {tier: served_spec(tier, settings)[0] for tier in TIERS}


def create_engine(tier: str, settings: Settings | None = None) -> Engine:
    """A new engine for `tier` with the configured backend."""
    settings = settings or get_settings()
    if backend_name(settings) == "llamacpp":
        from engines.llamacpp_engine import LlamaCppEngine
        from engines.llamacpp_models import resolve_gguf

        spec = resolve_gguf(tier, settings=settings)
        from engines.cores import TIER_HOMES

        return LlamaCppEngine(spec.path, spec.model_id, settings.engine_max_batch, spec.tokenizer_gguf, settings,
                              home_core=TIER_HOMES[tier])
    enable_fast_blas()  # before MLX loads: see engines.blas
    from engines.mlx_engine import MLXEngine

    spec = resolve_model(tier, settings=settings)
    return MLXEngine(spec.load_path, spec.model_id, settings.engine_max_batch, settings)


def loaded_engine(tier: str) -> Engine | None:
    """The tier's engine if this process has loaded it, else None (loads nothing).

    No lock: get_engine holds it while a model loads, and the heartbeat that asks must not wait
    that long (a dict read is atomic).
    """
    return _engines.get(tier)


def get_engine(tier: str) -> Engine:
    """The tier's engine for this process's settings, loading the model on the first call."""
    with _lock:
        if tier not in _engines:
            _engines[tier] = create_engine(tier)
        return _engines[tier]
