"""Sampling for the llama.cpp engine: one llama.cpp sampler chain per sequence.

The chain runs in C over the step's logits: the penalties, then greedy at temperature 0, or top-k,
top-p, min-p, temperature and a seeded draw. That is llama-server's order; penalties look at the
last PENALTY_LAST_N tokens, prompt included, as llama-server's do by default.

A grammar (structured output) is checked the way llama-server checks it: the chain picks a token,
the grammar judges that one token, and only when it refuses is the step sampled again with the
grammar applied to the whole vocabulary first. Applying it to all 49k tokens at every step made a
JSON answer about twice as slow.
"""
from __future__ import annotations

import ctypes
import math
from typing import Any, Optional

import numpy as np

from engines.base import GenerationRequest
from engines.features import PENALTY_LAST_N
GRAMMAR_ROOT = b"root"


class NoTokenAllowed(ValueError):
    """The grammar admits no token of the vocabulary here (accepting one would abort the process)."""


class SequenceSampler:
    """The sampler chain of one sequence; free it with `close()` when the sequence ends."""

    def __init__(self, llama: Any, vocab: Any, request: GenerationRequest, prompt: list[int]) -> None:
        self._llama = llama
        self._chain = llama.llama_sampler_chain_init(llama.llama_sampler_chain_default_params())
        self._grammar: Optional[Any] = None
        self._candidates: Optional[Candidates] = None
        try:
            self._build(vocab, request, prompt)
        except Exception:
            self.close()
            raise

    def _build(self, vocab: Any, request: GenerationRequest, prompt: list[int]) -> None:
        llama = self._llama
        if request.grammar:
            self._grammar = llama.llama_sampler_init_grammar(vocab, request.grammar.encode(), GRAMMAR_ROOT)
            if not self._grammar:
                raise ValueError("llama.cpp could not parse the request's grammar")
            self._candidates = Candidates(llama, llama.llama_vocab_n_tokens(vocab))
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
        # llama.cpp reads LLAMA_DEFAULT_SEED (2**32 - 1) as "pick one at random": no given seed may land on it
        seed = llama.LLAMA_DEFAULT_SEED if request.seed is None else request.seed % llama.LLAMA_DEFAULT_SEED
        self._add(llama.llama_sampler_init_dist(seed))

    def _add(self, sampler: Any) -> None:
        self._llama.llama_sampler_chain_add(self._chain, sampler)  # the chain owns it from here

    def sample(self, ctx: Any, row: int) -> int:
        """The next token from row `row` of the last decode's logits (accepted into the samplers' state)."""
        llama = self._llama
        if self._grammar is None:
            return int(llama.llama_sampler_sample(self._chain, ctx, row))
        logits = llama.llama_get_logits_ith(ctx, row)
        token = self._candidates.pick(self._chain, logits)
        if not self._allowed(token):
            token = self._candidates.pick(self._chain, logits, first=self._grammar)
        llama.llama_sampler_accept(self._grammar, token)
        llama.llama_sampler_accept(self._chain, token)
        return token

    def _allowed(self, token: int) -> bool:
        """Whether the grammar admits `token` next."""
        llama = self._llama
        single = llama.llama_token_data(token, 1.0, 0.0)
        candidates = llama.llama_token_data_array(ctypes.pointer(single), 1, -1, False)
        llama.llama_sampler_apply(self._grammar, ctypes.byref(candidates))
        return not math.isinf(single.logit)

    def close(self) -> None:
        for sampler in (self._chain, self._grammar):
            if sampler:
                self._llama.llama_sampler_free(sampler)
        self._chain = self._grammar = None


class Candidates:
    """A reusable llama_token_data array over the vocabulary, filled from a step's logits with numpy."""

    def __init__(self, llama: Any, n_vocab: int) -> None:
        self._llama = llama
        self._array = (llama.llama_token_data * n_vocab)()
        self._view = np.frombuffer(self._array, dtype=np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")]))
        self._ids = np.arange(n_vocab, dtype=np.int32)
        self._n_vocab = n_vocab

    def pick(self, chain: Any, logits: Any, first: Optional[Any] = None) -> int:
        """The token `chain` selects from `logits` (a float pointer), after `first` when given; nothing is
        accepted into either sampler."""
        llama = self._llama
        self._view["id"] = self._ids
        self._view["logit"] = np.ctypeslib.as_array(ctypes.cast(logits, ctypes.POINTER(ctypes.c_float)),
                                                    shape=(self._n_vocab,))
        self._view["p"] = 0.0
        candidates = llama.llama_token_data_array(self._array, self._n_vocab, -1, False)
        for sampler in (first, chain):
            if sampler is not None:
                llama.llama_sampler_apply(sampler, ctypes.byref(candidates))
        picked = candidates.data[candidates.selected]
        if first is not None and math.isinf(picked.logit):
            raise NoTokenAllowed("the grammar admits no token here")
        return int(picked.id)


def token_piece(llama: Any, vocab: Any, token: int) -> bytes:
    """A token's bytes as llama.cpp writes them (part of a UTF-8 character for some byte tokens)."""
    buffer = ctypes.create_string_buffer(64)
    size = llama.llama_token_to_piece(vocab, token, buffer, len(buffer), 0, False)
    if size < 0:
        buffer = ctypes.create_string_buffer(-size)
        size = llama.llama_token_to_piece(vocab, token, buffer, len(buffer), 0, False)
    return buffer.raw[:max(size, 0)]
