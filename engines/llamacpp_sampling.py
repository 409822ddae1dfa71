"""Sampling for the llama.cpp engine: one llama.cpp sampler chain per sequence.

The chain runs in C over the step's logits: the grammar (structured output) first, then the
penalties, then greedy at temperature 0, or top-k, top-p, min-p, temperature and a seeded draw.
That is llama-server's order; penalties look at the last PENALTY_LAST_N tokens, prompt included,
as llama-server's do by default.
"""
from __future__ import annotations

import ctypes
from typing import Any

from engines.base import GenerationRequest
from engines.features import PENALTY_LAST_N
GRAMMAR_ROOT = b"root"


class SequenceSampler:
    """The sampler chain of one sequence; free it with `close()` when the sequence ends."""

    def __init__(self, llama: Any, vocab: Any, request: GenerationRequest, prompt: list[int]) -> None:
        self._llama = llama
        self._chain = llama.llama_sampler_chain_init(llama.llama_sampler_chain_default_params())
        try:
            self._build(vocab, request, prompt)
        except Exception:
            self.close()
            raise

    def _build(self, vocab: Any, request: GenerationRequest, prompt: list[int]) -> None:
        llama = self._llama
        if request.grammar:
            grammar = llama.llama_sampler_init_grammar(vocab, request.grammar.encode(), GRAMMAR_ROOT)
            if not grammar:
                raise ValueError("llama.cpp could not parse the request's grammar")
            self._add(grammar)
        if (request.repetition_penalty, request.frequency_penalty, request.presence_penalty) != (1.0, 0.0, 0.0):
            penalties = llama.llama_sampler_init_penalties(llama.llama_vocab_n_tokens(vocab), PENALTY_LAST_N,
                                                           request.repetition_penalty, request.frequency_penalty,
                                                           request.presence_penalty)
            for token in prompt[-PENALTY_LAST_N:]:
                llama.llama_sampler_accept(penalties, token)
            self._add(penalties)
        if request.temperature <= 0:
            self._add(llama.llama_sampler_init_greedy())
            return
        if request.top_k > 0:
            self._add(llama.llama_sampler_init_top_k(request.top_k))
        if request.top_p < 1.0:
            self._add(llama.llama_sampler_init_top_p(request.top_p, 1))
        if request.min_p > 0.0:
            self._add(llama.llama_sampler_init_min_p(request.min_p, 1))
        self._add(llama.llama_sampler_init_temp(request.temperature))
        seed = llama.LLAMA_DEFAULT_SEED if request.seed is None else request.seed % 2**32
        self._add(llama.llama_sampler_init_dist(seed))

    def _add(self, sampler: Any) -> None:
        self._llama.llama_sampler_chain_add(self._chain, sampler)  # the chain owns it from here

    def sample(self, ctx: Any, row: int) -> int:
        """The next token from row `row` of the last decode's logits (accepted into the chain's state)."""
        return int(self._llama.llama_sampler_sample(self._chain, ctx, row))

    def close(self) -> None:
        if self._chain:
            self._llama.llama_sampler_free(self._chain)
            self._chain = None


def token_piece(llama: Any, vocab: Any, token: int) -> bytes:
    """A token's bytes as llama.cpp writes them (part of a UTF-8 character for some byte tokens)."""
    buffer = ctypes.create_string_buffer(64)
    size = llama.llama_token_to_piece(vocab, token, buffer, len(buffer), 0, False)
    if size < 0:
        buffer = ctypes.create_string_buffer(-size)
        size = llama.llama_token_to_piece(vocab, token, buffer, len(buffer), 0, False)
    return buffer.raw[:max(size, 0)]
