"""The llama.cpp engine (the default off Apple Silicon): continuous batching over llama.cpp sequences.

One thread owns a llama.cpp context with one KV sequence per batch slot. Each
decode call carries the next token of every generating request plus prompt
tokens of newly admitted ones (chunked prefill), so requests join and leave
between steps as with the MLX engine. The prompt is built and the answer
decoded by the same Hugging Face tokenizer and chat template as on the MLX path,
loaded with transformers from the GGUF's tokenizer folder
(engines.models.tokenizer_folder_for_gguf), so both backends see identical token
ids and MLX is never imported.

Needs llama-cpp-python (`make install` builds it: deploy/install-llamacpp.sh).
Which file each tier runs: engines/llamacpp_models.py. Settings:
`ENGINE_SEQ_CTX` (KV tokens reserved per batch slot, default 2048),
`ENGINE_THREADS` (default 0: each decode step runs as many ggml threads as it
holds cores of the host's shared budget, engines.cores; N > 0: always N threads).
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from engines.cores import CoreBudget, host_cores
from engines.hf_tokenizer import ChatTokenizer
from engines.llamacpp_models import quiet_llama_logs
from engines.llamacpp_sampling import NoTokenAllowed, SequenceSampler, token_piece
from engines.logprobs import log_softmax, logprob_entry
from engines.models import tokenizer_folder_for_gguf
from engines.threaded import Active, ThreadedEngine
from settings import Settings, get_settings

PREFILL_CHUNK = 512  # prompt tokens per decode call, shared by the sequences being prefilled
MIN_SHARED_PREFIX = 8  # shorter common prefixes are not worth a KV copy


@dataclass
class _Sequence:
    """A request bound to a llama.cpp sequence id (its KV slot)."""

    entry: Active
    slot: int
    prompt: list[int]
    pending: list[int]  # tokens still to feed: the prompt, then each sampled token
    reserved: int  # KV tokens it may use: prompt + max_tokens
    sampler: SequenceSampler
    position: int = 0
    generated: int = 0


class _SharedPrefix:
    """The prompt prefix that requests share (the chat template's system prompt, a common
    instruction), kept in a KV sequence of its own. A new request copies the part it shares into
    its slot (in a unified KV cache the copy shares cells) and prefills only the rest.

    The first request's prompt becomes the prefix; each later request trims it to what they
    share; a request that shares too little marks it stale, and the next prompt replaces it.
    The prefix is only a cache: it shrinks or goes whenever a request needs its KV room (`fit`).
    """

    def __init__(self, llama, memory, seq_id: int) -> None:
        self._llama, self._memory, self.seq_id = llama, memory, seq_id
        self.tokens: list[int] = []
        self._stale = False

    def reuse(self, prompt: list[int], slot: int) -> int:
        """Copy the shared part into `slot`; how many prompt tokens that covers (0: none)."""
        common = self._common(prompt)
        usable = min(common, len(prompt) - 1)  # the last prompt token is fed for its logits
        if usable < MIN_SHARED_PREFIX:
            self._stale = bool(self.tokens)
            return 0
        self._truncate(common)
        self._llama.llama_memory_seq_cp(self._memory, self.seq_id, slot, 0, usable)
        return usable

    def fit(self, prompt: list[int], room: int) -> None:
        """Keep at most `room` tokens, as much as possible of what `prompt` shares, or none."""
        if len(self.tokens) <= room:
            return
        keep = min(self._common(prompt), room)
        if keep >= MIN_SHARED_PREFIX:
            self._truncate(keep)
        else:
            self.clear()

    def offer(self, prompt: list[int], slot: int) -> None:
        """`slot` has just prefilled `prompt`: it becomes the prefix when there is none worth keeping."""
        if self.tokens and not self._stale:
            return
        self.clear()
        self._llama.llama_memory_seq_cp(self._memory, slot, self.seq_id, 0, len(prompt))
        self.tokens = list(prompt)

    def clear(self) -> None:
        if self.tokens:
            self._llama.llama_memory_seq_rm(self._memory, self.seq_id, -1, -1)
        self.tokens, self._stale = [], False

    def _common(self, prompt: list[int]) -> int:
        """How many leading tokens the prefix and `prompt` share."""
        return next((i for i, (a, b) in enumerate(zip(self.tokens, prompt)) if a != b),
                    min(len(self.tokens), len(prompt)))

    def _truncate(self, length: int) -> None:
        if length < len(self.tokens):
            self._llama.llama_memory_seq_rm(self._memory, self.seq_id, length, -1)
            self.tokens = self.tokens[:length]


class LlamaCppEngine(ThreadedEngine):
    """The engine interface over llama.cpp's batched decoding."""

    def __init__(self, gguf_path: str, model_id: str, max_batch: int = 8,
                 tokenizer_gguf: Optional[Path] = None, settings: Optional[Settings] = None,
                 home_core: int = 0) -> None:
        import llama_cpp

        settings = settings or get_settings()
        super().__init__(model_id, max_batch, settings)
        self._llama = llama_cpp
        quiet_llama_logs()
        self._held: Optional[tuple] = None  # a request waiting for KV room, first in line
        self.tokenizer = ChatTokenizer(tokenizer_folder_for_gguf(tokenizer_gguf or Path(gguf_path), settings=settings))

        llama_cpp.llama_backend_init()
        model_params = llama_cpp.llama_model_default_params()
        self._model = llama_cpp.llama_model_load_from_file(gguf_path.encode(), model_params)
        if not self._model:
            raise ValueError(f"llama.cpp could not load {gguf_path}")
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self._n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        # The tokenizer's end tokens, and llama.cpp's end-of-generation ones (the only ones a grammar
        # lets through once its answer is complete).
        self._stop_tokens = set(self.tokenizer.eos_token_ids) | {
            token for token in range(self._n_vocab) if llama_cpp.llama_vocab_is_eog(self._vocab, token)}
        # ENGINE_THREADS=0: the step's share of the host's cores, taken anew for each decode call
        self._cores = (CoreBudget(host_cores(), home_core, Path(settings.engine_core_dir) if settings.engine_core_dir
                                  else None) if settings.engine_threads <= 0 else None)
        self._threads = threads = settings.engine_threads if settings.engine_threads > 0 else 1
        self.kv_tokens = settings.engine_seq_ctx * max_batch
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = self.kv_tokens
        params.n_batch = PREFILL_CHUNK + max_batch
        params.n_ubatch = params.n_batch
        share_prefix = settings.engine_prefix_cache > 0
        params.n_seq_max = max_batch + share_prefix  # the shared prefix has a sequence of its own
        params.kv_unified = True  # one KV pool: a long request may use more than an even share
        params.n_threads = params.n_threads_batch = threads
        params.no_perf = True
        self._ctx = llama_cpp.llama_init_from_model(self._model, params)
        if not self._ctx:
            raise ValueError("llama.cpp could not create a context")
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(params.n_batch, 0, 1)
        self._prefix = _SharedPrefix(llama_cpp, self._memory, max_batch) if share_prefix else None
        # A recurrent or hybrid model's memory is a state, not cells per position: a copy would carry
        # the donor's generated tokens too.
        self.copies_prompt = not (llama_cpp.llama_model_is_recurrent(self._model)
                                  or llama_cpp.llama_model_is_hybrid(self._model))
        self.start()

    @property
    def kv_usage(self) -> float:
        """KV tokens held by running requests and the shared prefix over the pool (ENGINE_SEQ_CTX x batch).

        Cells a request copied from the prefix count for both, so this is at most the true share.
        """
        sequences = list(self._running.values())  # one C-level copy: the engine thread cannot change it meanwhile
        held = sum(seq.position for seq in sequences) + (len(self._prefix.tokens) if self._prefix else 0)
        return min(1.0, held / self.kv_tokens)

    # --- engine thread -------------------------------------------------

    def _serve(self) -> None:
        running: dict[int, _Sequence] = {}
        self._running = running  # read by batch_width and kv_usage from other threads
        try:
            while True:
                self._admit(running)
                self._drop_cancelled(running)
                if running:
                    self._step(running)
                if self._cores:
                    self._cores.busy(bool(running))
                self._pass_done(bool(running) or self._held is not None)
        except Exception as exc:
            if self._cores:  # the restarted loop waits idle: the other tier may borrow its cores meanwhile
                self._cores.release()
                self._cores.busy(False)
            for sequence in running.values():
                sequence.sampler.close()
                sequence.entry.outbox.put(exc)
            self._llama.llama_memory_clear(self._memory, True)
            if self._prefix:
                self._prefix.tokens = []
            raise

    def _admit(self, running: dict[int, _Sequence]) -> None:
        while len(running) < self.max_batch:
            queued, self._held = self._held or self._next_request(wait=not running), None
            if queued is None:
                return
            request, prompt, outbox = queued
            need = len(prompt) + request.max_tokens
            if need > self.kv_tokens:
                outbox.put(ValueError(f"prompt ({len(prompt)} tokens) plus max_tokens ({request.max_tokens}) "
                                      f"exceed the engine's {self.kv_tokens} KV tokens"))
                continue
            if not self._make_room(running, prompt, need):
                self._held = queued  # first in line once running requests free KV room
                return
            try:
                sampler = SequenceSampler(self._llama, self._vocab, request, prompt)
            except Exception as exc:  # a grammar llama.cpp cannot parse fails this request, not the engine
                outbox.put(exc)
                continue
            slot = min(s for s in range(self.max_batch) if s not in running)
            try:
                shared = self._copy_prompt(running, prompt, slot) or (self._prefix.reuse(prompt, slot)
                                                                      if self._prefix else 0)
            except Exception as exc:  # the loop restarts on a clean KV cache; this caller must not wait for ever
                sampler.close()
                outbox.put(exc)
                raise
            self.stats.reused_prompt_tokens += shared
            running[slot] = _Sequence(self._active(request, prompt, outbox), slot, prompt, prompt[shared:], need,
                                      sampler, position=shared)

    def _copy_prompt(self, running: dict[int, _Sequence], prompt: list[int], slot: int) -> int:
        """Copy the KV of a running sequence with the same prompt, already computed (another of a
        request's `n` answers), into `slot`; how many prompt tokens that covers (0: none)."""
        donor = next((seq for seq in running.values() if seq.generated and seq.prompt == prompt), None)
        if donor is None or len(prompt) <= 1 or not self.copies_prompt:
            return 0
        # the last prompt token is fed again for this sequence's own first logits
        self._llama.llama_memory_seq_cp(self._memory, donor.slot, slot, 0, len(prompt) - 1)
        return len(prompt) - 1

    def _make_room(self, running: dict[int, _Sequence], prompt: list[int], need: int) -> bool:
        """Whether `need` more KV tokens fit now; the shared prefix gives up its room before a request waits.

        Running requests and the prefix are all that hold KV (counted at most: shared cells count for
        both). Only running requests make a request wait: with nothing running it always fits, since
        `need` is at most the pool. (When a long first prompt as the prefix could make it wait, a request
        that fit the pool but not beside the prefix was parked for ever and froze the engine.)
        """
        room = self.kv_tokens - sum(s.reserved for s in running.values()) - need
        if room < 0:
            return False
        if self._prefix:
            self._prefix.fit(prompt, room)
        return True

    def _drop_cancelled(self, running: dict[int, _Sequence]) -> None:
        if self._held is not None and self._held[0].cancel.is_set():  # answered now, not once KV frees up
            request, prompt, outbox = self._held
            self._held = None
            self._answer_cancelled(request, prompt, outbox)
        for slot in [s for s, seq in running.items() if seq.entry.request.cancel.is_set()]:
            self._finish(running, slot, None)

    def _step(self, running: dict[int, _Sequence]) -> None:
        """One decode call: a token for each generating sequence, prompt chunks for the others."""
        llama, batch = self._llama, self._batch
        batch.n_tokens = 0
        budget = PREFILL_CHUNK
        wants_logits: list[tuple[int, int]] = []  # (slot, row in the batch)
        for slot, seq in running.items():
            if len(seq.pending) == 1:  # generating: its last sampled token
                take = list(seq.pending)
            elif budget > 0:  # prefilling: as much of the prompt as this call has room for
                take = seq.pending[:budget]
                budget -= len(take)
            else:
                continue
            for token in take:
                i = batch.n_tokens
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, seq.position, 1
                batch.seq_id[i][0], batch.logits[i] = slot, False
                seq.position += 1
                batch.n_tokens += 1
            del seq.pending[: len(take)]
            if not seq.pending:  # the whole prompt is in, or this was the last sampled token
                batch.logits[batch.n_tokens - 1] = True
                wants_logits.append((slot, batch.n_tokens - 1))
        code = self._decode(batch)
        if code != 0:
            raise RuntimeError(f"llama_decode returned {code}")
        self._record_step(len(wants_logits))
        for slot, row in wants_logits:
            if self._prefix and running[slot].generated == 0:  # its prompt is in the KV cache now
                self._prefix.offer(running[slot].prompt, slot)
            self._sample(running, slot, row)

    def _decode(self, batch) -> int:
        """llama_decode on the cores this step holds (engines.cores), or on ENGINE_THREADS threads."""
        if self._cores is None:
            return self._llama.llama_decode(self._ctx, batch)
        self._cores.busy(True)
        try:
            threads = self._cores.acquire()
            if threads != self._threads:
                self._llama.llama_set_n_threads(self._ctx, threads, threads)
                self._threads = threads
            return self._llama.llama_decode(self._ctx, batch)
        finally:
            self._cores.release()

    def _sample(self, running: dict[int, _Sequence], slot: int, row: int) -> None:
        seq = running[slot]
        request = seq.entry.request
        logprob = self._logprob(row, request.logprobs) if request.logprobs is not None else None
        try:
            token = seq.sampler.sample(self._ctx, row)
        except NoTokenAllowed as exc:  # this answer's grammar is at a dead end: it fails, the batch goes on
            running.pop(slot).sampler.close()
            self._llama.llama_memory_seq_rm(self._memory, slot, -1, -1)
            seq.entry.outbox.put(exc)
            return
        if logprob is not None:
            logprob = logprob(token)
        seq.generated += 1
        finish = "stop" if token in self._stop_tokens else (
            "length" if seq.generated >= request.max_tokens else None)
        if finish:
            self._finish(running, slot, token, finish, logprob)
        else:
            seq.pending.append(token)
            seq.entry.emit(token, None, logprob)

    def _logprob(self, row: int, alternatives: int) -> Callable[[int], dict]:
        """The step's log-probabilities (read before sampling), as a function of the sampled token."""
        logits = np.ctypeslib.as_array(
            ctypes.cast(self._llama.llama_get_logits_ith(self._ctx, row), ctypes.POINTER(ctypes.c_float)),
            shape=(self._n_vocab,))
        logprobs = log_softmax(logits)
        return lambda token: logprob_entry(logprobs, token, alternatives, self._piece)

    def _piece(self, token: int) -> bytes:
        return token_piece(self._llama, self._vocab, token)

    def _finish(self, running: dict[int, _Sequence], slot: int, token: Optional[int],
                reason: Optional[str] = None, logprob: Optional[dict] = None) -> None:
        seq = running.pop(slot)
        seq.sampler.close()
        self._llama.llama_memory_seq_rm(self._memory, slot, -1, -1)
        if reason is None:
            seq.entry.cancel()
        else:
            seq.entry.emit(token, reason, logprob)

