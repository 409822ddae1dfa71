"""An MLX engine: one thread runs mlx-lm's continuous-batching loop for all callers."""
from __future__ import annotations

import functools
import logging
from typing import Any, Callable, Optional

from engines.base import GenerationRequest
from engines.blas import blas_in_use
from engines.features import PENALTY_LAST_N, unsupported_request_fields
from engines.logprobs import logprob_entry
from engines.threaded import Active, ThreadedEngine
from settings import Settings, get_settings

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=64)
def _sampler(temperature: float, top_p: float, top_k: int, min_p: float) -> Callable:
    """One sampler object per setting: BatchGenerator samples a batch in one call only when its rows
    share the same sampler object. mlx-lm reads top_p 0 as "off": here, as on llama.cpp, it keeps
    only the most likely token, which is greedy."""
    from mlx_lm.sample_utils import make_sampler

    if top_p <= 0.0:
        return make_sampler(temp=0.0)
    return make_sampler(temp=temperature, top_p=top_p if top_p < 1.0 else 0.0, top_k=top_k, min_p=min_p)


def _processors(request: GenerationRequest) -> list:
    """mlx-lm's logits processors for the request's penalties (none when it has none)."""
    from mlx_lm.sample_utils import make_logits_processors

    if (request.repetition_penalty, request.frequency_penalty, request.presence_penalty) == (1.0, 0.0, 0.0):
        return []
    return make_logits_processors(
        repetition_penalty=request.repetition_penalty if request.repetition_penalty != 1.0 else None,
        frequency_penalty=request.frequency_penalty or None, presence_penalty=request.presence_penalty or None,
        repetition_context_size=PENALTY_LAST_N, frequency_context_size=PENALTY_LAST_N,
        presence_context_size=PENALTY_LAST_N)


def should_expand_quantized(settings: Optional[Settings] = None) -> bool:
    """`ENGINE_DEQUANTIZE`: `auto` (default) expands 4-bit weights when MLX has a real BLAS (Linux
    with OpenBLAS), where float32 matmuls batch well and MLX's CPU quantized matmul does not."""
    setting = (settings or get_settings()).engine_dequantize.strip().lower()
    if setting == "auto":
        return blas_in_use() is not None
    return setting in ("1", "true", "yes", "on")


def expand_quantized(model: Any) -> int:
    """Replace quantized layers by float32 layers holding exactly the same weight values.

    Scales and biases are widened before `scale * q + bias`, as the GGUF converter does
    for the large tier, so nothing is rounded. Returns the number of layers replaced.
    """
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_unflatten

    replaced = []
    for name, module in model.named_modules():
        if not isinstance(module, (nn.QuantizedLinear, nn.QuantizedEmbedding)):
            continue
        weight = mx.dequantize(module.weight, module.scales.astype(mx.float32), module.biases.astype(mx.float32),
                               group_size=module.group_size, bits=module.bits)
        if isinstance(module, nn.QuantizedEmbedding):
            layer = nn.Embedding(*weight.shape)
        else:
            layer = nn.Linear(weight.shape[1], weight.shape[0], bias="bias" in module)
            if "bias" in module:
                layer.bias = module.bias
        layer.weight = weight
        replaced.append((name, layer))
    if replaced:
        model.update_modules(tree_unflatten(replaced))
        mx.eval(model.parameters())
    return len(replaced)


def _prefix_cache(entries: int) -> Any:
    if entries <= 0:
        return None
    from mlx_lm.models.cache import LRUPromptCache

    return LRUPromptCache(max_size=entries)


class MLXEngine(ThreadedEngine):
    """Loads an mlx-lm model once and serves many requests from mlx-lm's `BatchGenerator`.

    Requests join and leave the running batch between decode steps (continuous batching).
    Finished requests leave their KV cache in an LRU (`ENGINE_PREFIX_CACHE` entries, default 8):
    a new prompt starts from the longest cached prefix, so the chat template's system prompt,
    shared by nearly every request, is not computed again (what mlx_lm.server does too).
    """

    def __init__(self, model_path: str, model_id: str, max_batch: int = 8,
                 settings: Optional[Settings] = None) -> None:
        import mlx_lm  # imported here so that merely importing this module never loads MLX

        settings = settings or get_settings()
        super().__init__(model_id, max_batch, settings)
        self.model, self.tokenizer = mlx_lm.load(model_path)
        self._prefixes = _prefix_cache(settings.engine_prefix_cache)
        if should_expand_quantized(settings) and (count := expand_quantized(self.model)):
            log.info("%s: %d quantized layers expanded to float32 for batched BLAS matmuls", model_id, count)
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
        self._running = active  # read by batch_width from other threads
        try:
            while True:
                self._admit(generator, active, wait=not active)
                self._drop_cancelled(generator, active)
                if active:
                    self._step(generator, active)
                self._pass_done(bool(active))
        except Exception as exc:
            for entry in active.values():
                entry.outbox.put(exc)
            raise
        finally:
            generator.close()

    def _admit(self, generator: Any, active: dict[int, Active], wait: bool) -> None:
        while (queued := self._next_request(wait)) is not None:
            wait = False
            request, prompt, outbox = queued
            refused = [name for name in unsupported_request_fields("mlx") if getattr(request, name) is not None]
            if refused:  # the web app refuses these with a 400 first: this guards other callers
                outbox.put(ValueError(f"the MLX engine does not support {', '.join(refused)}"))
                continue
            cache, rest = self._reuse_prefix(prompt)
            (uid,) = generator.insert(
                [rest],
                max_tokens=[request.max_tokens],
                caches=[cache],
                all_tokens=[prompt[: len(prompt) - len(rest)]],
                samplers=[_sampler(request.temperature, request.top_p, request.top_k, request.min_p)],
                logits_processors=[_processors(request)],
            )
            self.stats.reused_prompt_tokens += len(prompt) - len(rest)
            active[uid] = self._active(request, prompt, outbox)

    def _reuse_prefix(self, prompt: list[int]) -> tuple[Any, list[int]]:
        """A copy of the KV cache of the longest cached prefix, and the prompt tokens still to process."""
        if self._prefixes is None:
            return None, prompt
        from mlx_lm.models.cache import trim_prompt_cache

        cache, rest = self._prefixes.fetch_nearest_cache(self.model_id, prompt)
        if cache is not None and not rest:  # the last prompt token must run to give the first logits
            trim_prompt_cache(cache, 1)
            rest = prompt[-1:]
        return cache, rest

    def _drop_cancelled(self, generator: Any, active: dict[int, Active]) -> None:
        cancelled = [uid for uid, entry in active.items() if entry.request.cancel.is_set()]
        if cancelled:
            generator.remove(cancelled)
            for uid in cancelled:
                active.pop(uid).cancel()

    def _step(self, generator: Any, active: dict[int, Active]) -> None:
        _, responses = generator.next()
        self._record_step(len(responses))
        for response in responses:
            entry = active.get(response.uid)
            if entry is None:
                continue
            if response.finish_reason:
                del active[response.uid]
                if self._prefixes is not None and response.prompt_cache is not None:
                    self._prefixes.insert_cache(self.model_id, response.all_tokens, response.prompt_cache)
            entry.emit(response.token, response.finish_reason, self._logprob(entry, response))

    def _logprob(self, entry: Active, response: Any) -> Optional[dict]:
        alternatives = entry.request.logprobs
        if alternatives is None or response.finish_reason == "stop":
            return None
        import mlx.core as mx
        import numpy as np

        # numpy cannot read bfloat16 (the dtype of many mlx-community models' logits) straight from MLX
        row = np.array(response.logprobs.astype(mx.float32), dtype=np.float64)
        return logprob_entry(row, response.token, alternatives, self._piece)

    def _piece(self, token: int) -> bytes:
        return self.tokenizer.decode([token]).encode()
