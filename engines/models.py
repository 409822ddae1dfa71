"""Which model serves each tier, and where its MLX folder and a GGUF's tokenizer folder live (made once)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from settings import Settings, get_settings

TIERS = ("small", "large")
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"


@dataclass(frozen=True)
class ModelSpec:
    """A tier's model: the id shown to clients and the path (or hub repo id) mlx-lm loads."""

    tier: str
    model_id: str
    load_path: str


def models_dir(settings: Optional[Settings] = None) -> Path:
    """Where prepared models live (MODELS_DIR)."""
    return (settings or get_settings()).models_path()


def _gguf_target(gguf: Path, dequantize: bool, settings: Settings) -> Path:
    variant = "fp32" if dequantize else "q4"
    return models_dir(settings) / f"{gguf.stem}-{variant}"


def _ensure_converted(gguf: Path, dequantize: bool, progress: Callable[[str], None], settings: Settings) -> Path:
    target = _gguf_target(gguf, dequantize, settings)
    if not (target / "config.json").exists():
        from engines.gguf import convert_gguf

        convert_gguf(gguf, target, dequantize=dequantize, progress=progress)
    return target


def tokenizer_folder_for_gguf(gguf: Path, prepare: bool = True, progress: Callable[[str], None] = print,
                              settings: Optional[Settings] = None) -> Path:
    """The folder holding the tokenizer and chat template of `gguf` (`tokenizer.json`, `tokenizer_config.json`).

    Built without MLX (engines.gguf_tokenizer), on first use when `prepare`; with `prepare=False`
    only its path, which may not exist yet. The llama.cpp engine and the web app load it.
    """
    gguf = Path(gguf).resolve()
    target = models_dir(settings) / f"{gguf.stem}-tokenizer"
    if prepare and not (target / "tokenizer_config.json").exists():
        from engines.gguf_tokenizer import build_tokenizer_folder

        build_tokenizer_folder(gguf, target, progress)
    return target


def resolve_model(tier: str, prepare: bool = True, progress: Callable[[str], None] = print,
                  settings: Optional[Settings] = None) -> ModelSpec:
    """Resolve `<TIER>_MODEL` (a folder, a .gguf file or a hub repo id) or the bundled default.

    The default small tier is the bundled SmolLM2-135M at 4 bits and the default large
    tier is the same weights dequantized to float32: one small model, two precisions.
    """
    settings = settings or get_settings()
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r}")
    source = settings.tier_value(tier, "model")
    if not source:
        from engines.bundled import bundled_gguf_path

        dequantize = tier == "large"
        path = _ensure_converted(bundled_gguf_path(), dequantize, progress, settings) if prepare else _gguf_target(
            bundled_gguf_path(), dequantize, settings
        )
        return ModelSpec(tier, f"{DEFAULT_MODEL_NAME}-{'fp32' if dequantize else 'q4'}", str(path))
    if source.endswith(".gguf"):
        gguf = Path(source).expanduser().resolve()
        path = _ensure_converted(gguf, False, progress, settings) if prepare else _gguf_target(gguf, False, settings)
        return ModelSpec(tier, gguf.stem, str(path))
    local = Path(source).expanduser()
    if local.is_dir():
        return ModelSpec(tier, local.resolve().name, str(local.resolve()))
    if re.fullmatch(r"[\w.-]+/[\w.-]+", source):
        return ModelSpec(tier, source, source)  # a hub repo id: mlx-lm downloads it on load
    raise ValueError(f"{tier.upper()}_MODEL={source!r} is neither a folder, a .gguf file nor a repo id")
