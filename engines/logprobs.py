"""Token log-probabilities in OpenAI's shape, from one step's log-probability row (any backend)."""
from __future__ import annotations

from typing import Callable

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities of raw logits (float64: a 49k vocabulary loses nothing to rounding)."""
    row = logits.astype(np.float64)
    top = row.max()
    return row - (top + np.log(np.exp(row - top).sum()))


def logprob_entry(logprobs: np.ndarray, token: int, alternatives: int, piece: Callable[[int], bytes]) -> dict:
    """`{"token", "logprob", "bytes", "top_logprobs"}` for the sampled `token`, with the `alternatives`
    most likely tokens of the step (most likely first). `piece` gives a token's bytes."""
    top: list[dict] = []
    if alternatives > 0:
        best = np.argpartition(-logprobs, alternatives - 1)[:alternatives]
        top = [_token_logprob(int(t), float(logprobs[t]), piece) for t in best[np.argsort(-logprobs[best])]]
    return {**_token_logprob(token, float(logprobs[token]), piece), "top_logprobs": top}


def _token_logprob(token: int, logprob: float, piece: Callable[[int], bytes]) -> dict:
    raw = piece(token)
    return {"token": raw.decode("utf-8", errors="replace"), "logprob": max(logprob, -9999.0), "bytes": list(raw)}
