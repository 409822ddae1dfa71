"""Counting a prompt's tokens in the web app, with the tiers' own tokenizers (no model is loaded, MLX is not imported).

The tokenizers are the ones the engines use: with llama.cpp, each tier's GGUF tokenizer folder
(engines.models.tokenizer_folder_for_gguf); with MLX, each tier's MLX folder. Their paths are
located once per process; nothing is converted here (`make models` and the workers do that).
"""
from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import Optional

from engines.llamacpp_models import resolve_gguf
from engines.models import TIERS, resolve_model, tokenizer_folder_for_gguf
from engines.provider import backend_name
from settings import Settings, get_settings

log = logging.getLogger(__name__)


def tokenizer_folder(tier: str, settings: Optional[Settings] = None) -> Path:
    """The folder whose tokenizer.json the engine of `tier` uses, found without preparing anything."""
    settings = settings or get_settings()
    if backend_name(settings) == "llamacpp":
        gguf = resolve_gguf(tier, prepare=False, settings=settings).tokenizer_gguf
        return tokenizer_folder_for_gguf(gguf, prepare=False, settings=settings)
    return Path(resolve_model(tier, prepare=False, settings=settings).load_path)


@lru_cache(maxsize=8)
def _tokenizers(settings: Settings) -> tuple:
    """The distinct tokenizer.json files of the tiers, loaded once per settings object."""
    from tokenizers import Tokenizer

    paths = {tokenizer_folder(tier, settings) / "tokenizer.json" for tier in TIERS}
    found = [path for path in sorted(paths) if path.is_file()]
    if len(found) < len(paths):
        log.warning("no local tokenizer.json for some tiers (run `make models`); "
                    "their prompts are counted with the others'")
    return tuple(Tokenizer.from_file(str(path)) for path in found)


def load_tokenizers(settings: Settings) -> None:
    """Load the tiers' tokenizers now (a serving process's start-up): the first prompt each process
    validated waited ~0.1 s for the load, and its first import of `tokenizers` more."""
    _tokenizers(settings)


def prompt_tokens(prompt: str, settings: Optional[Settings] = None) -> int:
    """The prompt's length in tokens for the tier that counts it longest (0 when no tokenizer is local)."""
    tokenizers = _tokenizers(settings or get_settings())
    return max((len(tokenizer.encode(prompt, add_special_tokens=False)) for tokenizer in tokenizers), default=0)
