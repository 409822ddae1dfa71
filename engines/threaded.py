"""What every batching backend shares: one thread owns the model; callers queue requests and read chunks.

Model state is only touched on the engine thread, so callers (Celery task
threads) never run model code concurrently. A backend implements `_serve`, a
loop that admits queued requests into its batch and emits their tokens, and
sets a tokenizer with the `EngineTokenizer` interface: mlx-lm's
TokenizerWrapper (MLX engine) or engines.hf_tokenizer.ChatTokenizer (llama.cpp,
no MLX).
"""
from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from typing import AbstractSet, Iterator, Optional, Protocol

from engines.base import EngineStats, GenerationChunk, GenerationRequest

log = logging.getLogger(__name__)


class Detokenizer(Protocol):
    """One request's generated tokens turned into text as they come (mlx-lm's streaming detokenizers
    and engines.hf_tokenizer.StreamingDetokenizer have this interface)."""

    def add_token(self, token: int) -> None: ...

    def finalize(self) -> None:
        """No more tokens: release the text held back."""

    @property
    def last_segment(self) -> str:
        """The text completed since the last read."""


class EngineTokenizer(Protocol):
    """What the batch loop uses of a tokenizer."""

    chat_template: Optional[str]
    eos_token_ids: AbstractSet[int]

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool) -> list[int]: ...

    def encode(self, text: str) -> list[int]: ...

    @property
    def detokenizer(self) -> Detokenizer:
        """A new detokenizer for one request (requests are detokenized side by side)."""


@dataclass
class Active:
    """Book-keeping for one request inside the batch loop."""

    request: GenerationRequest
    outbox: queue.Queue
    detokenizer: Detokenizer
    prompt_tokens: int

    def emit(self, token: Optional[int], finish_reason: Optional[str]) -> None:
        """Hand the caller the text of `token`; a finish reason ends the request."""
        if token is not None and finish_reason != "stop":  # the stop token itself is not text
            self.detokenizer.add_token(token)
        if finish_reason:
            self.detokenizer.finalize()
        self.outbox.put(GenerationChunk(self.detokenizer.last_segment, token=token,
                                        finish_reason=finish_reason, prompt_tokens=self.prompt_tokens))

    def cancel(self) -> None:
        self.outbox.put(GenerationChunk("", finish_reason="cancelled", prompt_tokens=self.prompt_tokens))


class ThreadedEngine:
    """Base class: the request queue, the engine thread and the chat template.

    A subclass sets `self.tokenizer` (an `EngineTokenizer`) before calling
    `start()`, and implements `_serve()`.
    """

    model_id: str
    tokenizer: EngineTokenizer

    def __init__(self, model_id: str, max_batch: int) -> None:
        self.model_id = model_id
        self.max_batch = max_batch
        self.stats = EngineStats()
        self._inbox: queue.Queue = queue.Queue()

    def start(self) -> None:
        threading.Thread(target=self._run, name=f"engine-{self.model_id}", daemon=True).start()

    def encode(self, messages: list[dict]) -> list[int]:
        """Token ids of the chat-templated prompt, ready for generation."""
        if getattr(self.tokenizer, "chat_template", None):
            return list(self.tokenizer.apply_chat_template(messages, add_generation_prompt=True))
        text = "\n".join(m["content"] for m in messages)
        return self.tokenizer.encode(text)

    def generate(self, request: GenerationRequest) -> Iterator[GenerationChunk]:
        """Queue the request on the engine thread and yield its chunks as they arrive."""
        outbox: queue.Queue = queue.Queue()
        self._inbox.put((request, self.encode(request.messages), outbox))
        try:
            while True:
                item = outbox.get()
                if isinstance(item, BaseException):
                    raise item
                if request.cancel.is_set() and not item.finish_reason:
                    continue  # decoded before the engine saw the cancel: not delivered after it
                yield item
                if item.finish_reason:
                    return
        finally:
            # A caller that stops reading early must not keep a batch slot busy.
            request.cancel.set()

    def _next_request(self, block: bool) -> Optional[tuple[GenerationRequest, list[int], queue.Queue]]:
        """The next queued request, or None; one cancelled while queued is answered here."""
        while True:
            try:
                request, prompt, outbox = self._inbox.get(block=block)
            except queue.Empty:
                return None
            if not request.cancel.is_set():
                return request, prompt, outbox
            outbox.put(GenerationChunk("", finish_reason="cancelled", prompt_tokens=len(prompt)))

    def _active(self, request: GenerationRequest, prompt: list[int], outbox: queue.Queue) -> Active:
        return Active(request, outbox, self.tokenizer.detokenizer, len(prompt))

    def _run(self) -> None:
        while True:
            try:
                self._serve()
            except Exception as exc:  # keep the engine alive for the next request
                log.exception("engine loop failed: %s", exc)

    def _serve(self) -> None:
        raise NotImplementedError
