"""Which GGUF file llama.cpp runs for each tier: a file you name, or the bundled model at the tier's precision.

llama.cpp runs the bundled Q4_1 file as is with 8-bit activations, which costs a 135M model
its answers (asked for the capital of France it says "L'Étoile"). So by default each tier runs
the bundled weights expanded once, by llama.cpp's own quantizer, into MODELS_DIR:
- small: bfloat16 where the CPU multiplies bfloat16 natively (AVX512_BF16, or BF16 on Arm): the
  precision SmolLM2 was released in, and the fastest type here; float16 elsewhere (half the
  memory, the same greedy answers as float32 on our checks);
- large: float32 (the same weights, and the same greedy answers, as the MLX float32 tier).

`<TIER>_GGUF_TYPE` picks another: f32, f16, bf16, q8_0, or q4_1 (the bundled file as it is).
`<TIER>_GGUF` (or a `<TIER>_MODEL` ending in .gguf) names a file, which runs as it is.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from engines.models import DEFAULT_MODEL_NAME, models_dir, tokenizer_folder_for_gguf
from settings import Settings, get_settings

DEFAULT_TYPES = {"small": "bf16-if-native", "large": "f32"}
SOURCE_TYPE = "q4_1"  # the bundled file's own type: no conversion
GGUF_TYPES = ("f32", "f16", "bf16", "q8_0", SOURCE_TYPE)


@dataclass(frozen=True)
class GGUFSpec:
    """What a llama.cpp engine loads for a tier."""

    path: str
    model_id: str
    tokenizer_gguf: Path  # its tokenizer and chat template: engines.models.tokenizer_folder_for_gguf


def quiet_llama_logs() -> None:
    """Keep llama.cpp's informational log lines out of the worker logs.

    llama-cpp-python prints a line when its logger's level is at or below the line's level, but
    its table of ggml levels predates ggml's renumbering: informational lines now arrive as
    WARNING, warnings as ERROR and errors as DEBUG. ERROR here shows warnings and no chatter;
    errors stay hidden, but every llama.cpp call the engine makes raises when it fails.
    """
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)


def gguf_type(tier: str, settings: Optional[Settings] = None) -> str:
    name = (settings or get_settings()).tier_value(tier, "gguf_type").lower() or DEFAULT_TYPES[tier]
    if name == "bf16-if-native":
        name = "bf16" if cpu_has_native_bf16() else "f16"
    if name not in GGUF_TYPES:
        raise ValueError(f"{tier.upper()}_GGUF_TYPE={name!r}: choose one of {', '.join(GGUF_TYPES)}")
    return name


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bfloat16 dot-product instructions (read from /proc/cpuinfo on Linux)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "bf16" in flags


def resolve_gguf(tier: str, prepare: bool = True, settings: Optional[Settings] = None) -> GGUFSpec:
    """The GGUF file llama.cpp runs for `tier` and the id clients see.

    With `prepare` (engines.prepare, `make models`, and the engine), the bundled file is expanded
    and the tokenizer folder built, each once; without it, nothing is written.
    """
    settings = settings or get_settings()
    spec = _gguf_spec(tier, prepare, settings)
    if prepare:
        tokenizer_folder_for_gguf(spec.tokenizer_gguf, settings=settings)
    return spec


def _gguf_spec(tier: str, prepare: bool, settings: Settings) -> GGUFSpec:
    named = _named_gguf(tier, settings)
    if named is not None:
        return GGUFSpec(str(named), f"{named.stem}-llamacpp", named)
    from engines.bundled import bundled_gguf_path

    source = bundled_gguf_path()
    kind = gguf_type(tier, settings)
    target = models_dir(settings) / f"{source.stem}-{kind}.gguf"
    path = source if kind == SOURCE_TYPE else expanded_gguf(source, kind, target) if prepare else target
    return GGUFSpec(str(path), f"{DEFAULT_MODEL_NAME}-{kind}-llamacpp", source)


def _named_gguf(tier: str, settings: Settings) -> Path | None:
    source = settings.tier_value(tier, "gguf")
    if not source and settings.tier_value(tier, "model").endswith(".gguf"):
        source = settings.tier_value(tier, "model")
    if not source:
        return None
    path = Path(source).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"{tier.upper()}_GGUF={source!r} is not a file")
    return path


def expanded_gguf(source: Path, kind: str, target: Path) -> Path:
    """`source` rewritten with weights of type `kind` at `target`, made once (written aside, then renamed)."""
    import llama_cpp

    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = {"f32": llama_cpp.LLAMA_FTYPE_ALL_F32, "f16": llama_cpp.LLAMA_FTYPE_MOSTLY_F16,
                    "bf16": llama_cpp.LLAMA_FTYPE_MOSTLY_BF16, "q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0}[kind]
    params.allow_requantize = True  # the source is quantized: expand it
    params.nthread = os.cpu_count() or 1
    try:
        with _stderr_captured() as log:
            code = llama_cpp.llama_model_quantize(str(source).encode(), str(partial).encode(), params)
        if code != 0:
            raise RuntimeError(f"llama.cpp could not write {kind} weights for {source} (code {code}): "
                               f"{''.join(log)[-2000:]}")
        os.replace(partial, target)  # two processes may race here; either result is the same file
    finally:
        partial.unlink(missing_ok=True)
    return target


@contextlib.contextmanager
def _stderr_captured() -> Iterator[list[str]]:
    """Collect what native code writes to stderr (llama.cpp's quantizer logs a line per tensor there,
    past llama-cpp-python's log filter) into the yielded list, for the caller to show on failure."""
    captured: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile("w+") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            log.seek(0)
            captured.append(log.read())
