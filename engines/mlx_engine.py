"""An MLX engine: one thread runs mlx-lm's continuous-batching loop for all callers."""
from __future__ import annotations

import functools
import logging
import queue
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from engines.base import EngineStats, GenerationChunk, GenerationRequest

log = logging.getLogger(__name__)


@dataclass
class _Active:
    """Book-keeping for one request inside the batch loop."""

    request: GenerationRequest
    outbox: queue.Queue
    detokenizer: Any
    prompt_tokens: int


@functools.lru_cache(maxsize=64)
def _sampler(temperature: float) -> Callable:
    """One sampler object per temperature: BatchGenerator samples a batch in one call
    only when its rows share the same sampler object."""
    from mlx_lm.sample_utils import make_sampler

    return make_sampler(temp=temperature)


class MLXEngine:
    """Loads an mlx-lm model once and serves many requests from a single generation thread.

    MLX work stays on that one thread, so callers (Celery task threads) never touch
    MLX state concurrently; they hand in requests and read chunks from a queue.
    """

    def __init__(self, model_path: str, model_id: str, max_batch: int = 8) -> None:
        import mlx_lm  # imported here so that merely importing this module never loads MLX

        self.model_id = model_id
        self.max_batch = max_batch
        self.model, self.tokenizer = mlx_lm.load(model_path)
        self.stats = EngineStats()
        self._inbox: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=f"engine-{model_id}", daemon=True)
        self._thread.start()

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
                yield item
                if item.finish_reason:
                    return
        finally:
            # A caller that stops reading early must not keep a batch slot busy.
            request.cancel.set()

    # --- engine thread -------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                self._serve()
            except Exception as exc:  # keep the engine alive for the next request
                log.exception("engine loop failed: %s", exc)

    def _serve(self) -> None:
        from mlx_lm.generate import BatchGenerator

        generator = BatchGenerator(
            self.model,
            stop_tokens=[[t] for t in self.tokenizer.eos_token_ids],
            completion_batch_size=self.max_batch,
            prefill_batch_size=min(self.max_batch, 8),
        )
        active: dict[int, _Active] = {}
        try:
            while True:
                self._admit(generator, active, block=not active)
                self._drop_cancelled(generator, active)
                if active:
                    self._step(generator, active)
        except Exception as exc:
            for entry in active.values():
                entry.outbox.put(exc)
            raise
        finally:
            generator.close()

    def _admit(self, generator: Any, active: dict[int, _Active], block: bool) -> None:
        while True:
            try:
                request, prompt, outbox = self._inbox.get(block=block)
            except queue.Empty:
                return
            block = False
            if request.cancel.is_set():
                outbox.put(GenerationChunk("", finish_reason="cancelled", prompt_tokens=len(prompt)))
                continue
            (uid,) = generator.insert(
                [prompt],
                max_tokens=[request.max_tokens],
                samplers=[_sampler(request.temperature)],
            )
            active[uid] = _Active(request, outbox, self.tokenizer.detokenizer, len(prompt))

    def _drop_cancelled(self, generator: Any, active: dict[int, _Active]) -> None:
        cancelled = [uid for uid, entry in active.items() if entry.request.cancel.is_set()]
        if not cancelled:
            return
        generator.remove(cancelled)
        for uid in cancelled:
            entry = active.pop(uid)
            entry.outbox.put(GenerationChunk("", finish_reason="cancelled", prompt_tokens=entry.prompt_tokens))

    def _step(self, generator: Any, active: dict[int, _Active]) -> None:
        _, responses = generator.next()
        self.stats.record_step(len(responses))
        for response in responses:
            entry = active.get(response.uid)
            if entry is None:
                continue
            detokenizer = entry.detokenizer
            if response.finish_reason != "stop":  # the stop token itself is not text
                detokenizer.add_token(response.token)
            if response.finish_reason:
                detokenizer.finalize()
                del active[response.uid]
            entry.outbox.put(
                GenerationChunk(
                    detokenizer.last_segment,
                    token=response.token,
                    finish_reason=response.finish_reason,
                    prompt_tokens=entry.prompt_tokens,
                )
            )
