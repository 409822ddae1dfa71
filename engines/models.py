"""Which model serves each tier, and where its MLX folder lives (converting GGUF files once)."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
TIERS = ("small", "large")
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"


@dataclass(frozen=True)
class ModelSpec:
    """A tier's model: the id shown to clients and the path (or hub repo id) mlx-lm loads."""

    tier: str
    model_id: str
    load_path: str


def models_dir() -> Path:
    return Path(os.environ.get("MODELS_DIR") or ROOT / ".models")


def _gguf_target(gguf: Path, dequantize: bool) -> Path:
    variant = "fp32" if dequantize else "q4"
    return models_dir() / f"{gguf.stem}-{variant}"


def _ensure_converted(gguf: Path, dequantize: bool, progress: Callable[[str], None]) -> Path:
    target = _gguf_target(gguf, dequantize)
    if not (target / "config.json").exists():
        from engines.gguf import convert_gguf

        convert_gguf(gguf, target, dequantize=dequantize, progress=progress)
    return target


def mlx_folder_for_gguf(gguf: Path, progress: Callable[[str], None] = print) -> Path:
    """The MLX folder converted from `gguf` (4-bit kept), converting it on first use."""
    return _ensure_converted(Path(gguf).resolve(), False, progress)


def resolve_model(tier: str, prepare: bool = True, progress: Callable[[str], None] = print) -> ModelSpec:
    """Resolve `<TIER>_MODEL` (a folder, a .gguf file or a hub repo id) or the bundled default.

    The default small tier is the bundled SmolLM2-135M at 4 bits and the default large
    tier is the same weights dequantized to float32: one small model, two precisions.
    """
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r}")
    source = os.environ.get(f"{tier.upper()}_MODEL", "").strip()
    if not source:
        from engines.bundled import bundled_gguf_path

        dequantize = tier == "large"
        path = _ensure_converted(bundled_gguf_path(), dequantize, progress) if prepare else _gguf_target(
            bundled_gguf_path(), dequantize
        )
        return ModelSpec(tier, f"{DEFAULT_MODEL_NAME}-{'fp32' if dequantize else 'q4'}", str(path))
    if source.endswith(".gguf"):
        gguf = Path(source).expanduser().resolve()
        path = _ensure_converted(gguf, False, progress) if prepare else _gguf_target(gguf, False)
        return ModelSpec(tier, gguf.stem, str(path))
    local = Path(source).expanduser()
    if local.is_dir():
        return ModelSpec(tier, local.resolve().name, str(local.resolve()))
    if re.fullmatch(r"[\w.-]+/[\w.-]+", source):
        return ModelSpec(tier, source, source)  # a hub repo id: mlx-lm downloads it on load
    raise ValueError(f"{tier.upper()}_MODEL={source!r} is neither a folder, a .gguf file nor a repo id")
