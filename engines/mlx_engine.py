"""An MLX engine: one thread runs mlx-lm's continuous-batching loop for all callers."""
from __future__ import annotations

import functools
from typing import Any, Callable

from engines.threaded import Active, ThreadedEngine


@functools.lru_cache(maxsize=64)
def _sampler(temperature: float) -> Callable:
    """One sampler object per temperature: BatchGenerator samples a batch in one call
    only when its rows share the same sampler object."""
    from mlx_lm.sample_utils import make_sampler

    return make_sampler(temp=temperature)


class MLXEngine(ThreadedEngine):
    """Loads an mlx-lm model once and serves many requests from mlx-lm's `BatchGenerator`.

    Requests join and leave the running batch between decode steps (continuous batching).
    """

    def __init__(self, model_path: str, model_id: str, max_batch: int = 8) -> None:
        import mlx_lm  # imported here so that merely importing this module never loads MLX

        super().__init__(model_id, max_batch)
        self.model, self.tokenizer = mlx_lm.load(model_path)
        self.start()

    def _serve(self) -> None:
        from mlx_lm.generate import BatchGenerator

        generator = BatchGenerator(
            self.model,
            stop_tokens=[[t] for t in self.tokenizer.eos_token_ids],
            completion_batch_size=self.max_batch,
            prefill_batch_size=min(self.max_batch, 8),
        )
        active: dict[int, Active] = {}
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

    def _admit(self, generator: Any, active: dict[int, Active], block: bool) -> None:
        while (queued := self._next_request(block)) is not None:
            block = False
            request, prompt, outbox = queued
            (uid,) = generator.insert(
                [prompt],
                max_tokens=[request.max_tokens],
                samplers=[_sampler(request.temperature)],
            )
            active[uid] = self._active(request, prompt, outbox)

    def _drop_cancelled(self, generator: Any, active: dict[int, Active]) -> None:
        cancelled = [uid for uid, entry in active.items() if entry.request.cancel.is_set()]
        if cancelled:
            generator.remove(cancelled)
            for uid in cancelled:
                active.pop(uid).cancel()

    def _step(self, generator: Any, active: dict[int, Active]) -> None:
        _, responses = generator.next()
        self.stats.record_step(len(responses))
        for response in responses:
            entry = active.get(response.uid)
            if entry is None:
                continue
            if response.finish_reason:
                del active[response.uid]
            entry.emit(response.token, response.finish_reason)
