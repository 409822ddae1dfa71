"""Counting a prompt's tokens in the web app, with the tiers' own tokenizers (no model is loaded)."""
from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

from engines.models import TIERS, resolve_model

log = logging.getLogger(__name__)


@lru_cache(maxsize=None)
def _tokenizers() -> tuple:
    """The distinct tokenizer.json files of the tiers' model folders, loaded once."""
    from tokenizers import Tokenizer

    paths = {Path(resolve_model(tier, prepare=False).load_path) / "tokenizer.json" for tier in TIERS}
    found = [path for path in sorted(paths) if path.is_file()]
    if len(found) < len(paths):
        log.warning("no local tokenizer.json for some tiers; their prompts are counted with the others'")
    return tuple(Tokenizer.from_file(str(path)) for path in found)


def prompt_tokens(prompt: str) -> int:
    """The prompt's length in tokens for the tier that counts it longest (0 when no tokenizer is local)."""
    return max((len(tokenizer.encode(prompt, add_special_tokens=False)) for tokenizer in _tokenizers()), default=0)
