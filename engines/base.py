"""The engine interface: a request goes in, generated chunks come out."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Iterator, Optional, Protocol

from engines.features import NEUTRAL


class CancelFlag(Protocol):
    """What the engines use of a request's cancel flag (a threading.Event, or one answer's own flag)."""

    def is_set(self) -> bool: ...

    def set(self) -> None: ...


# The request fields that shape sampling, named as in the jobs API and OpenAI's (engines/features.py
# holds the neutral values; webapp/sampling.py the limits).
SAMPLING_FIELDS = ("temperature", *NEUTRAL, "seed")


@dataclass
class GenerationRequest:
    """One generation job as the engine sees it.

    `prompt_text` (the legacy completions API) is fed as it is, with no chat template. `n` answers are
    generated side by side, each as its own sequence (chunks carry their `index`); with a `seed`,
    answer i draws from `seed + i`. `stop` strings end an answer and are not returned. `logprobs`
    (0-5 alternatives; None: off) adds each token's log-probability to its chunk. `grammar` (GBNF)
    constrains every token (structured output). `streamed` False: the caller wants the whole answer, not
    each token as it comes, and its chunks reach it in batches (engines.threaded.HAND_OVER_S).
    """

    messages: list[dict]
    max_tokens: int = 128
    temperature: float = 0.0
    cancel: CancelFlag = field(default_factory=threading.Event)
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    seed: Optional[int] = None
    stop: tuple[str, ...] = ()
    n: int = 1
    logprobs: Optional[int] = None
    grammar: Optional[str] = None
    prompt_text: Optional[str] = None
    index: int = 0  # which of the request's `n` answers this sequence is (set by the engine)
    streamed: bool = True


@dataclass
class GenerationChunk:
    """A piece of generated text; the last one carries a finish reason."""

    text: str
    token: Optional[int] = None
    finish_reason: Optional[str] = None  # "stop", "length", "cancelled"
    prompt_tokens: int = 0
    index: int = 0  # which of the request's `n` answers
    logprob: Optional[dict] = None  # OpenAI's shape: token, logprob, bytes, top_logprobs


class Engine(Protocol):
    """What a generation worker needs from a model backend."""

    model_id: str
    stats: "EngineStats"

    def generate(self, request: GenerationRequest) -> Iterator[GenerationChunk]:
        """Yield chunks as tokens are produced; stop after a chunk with a finish reason.

        Raises EngineStalled rather than wait forever on an engine that stopped stepping."""
        ...

    def stalled_for(self) -> float:
        """Seconds the engine has had work without completing a decode step (0.0 when idle or
        progressing); safe to call from any thread."""
        ...

    def stalled(self) -> bool:
        """Whether stalled_for() exceeds the engine's ENGINE_STALL_S."""
        ...

    @property
    def batch_width(self) -> int:
        """Requests in the current batch; cheap, any thread (metrics read it)."""
        ...

    @property
    def steps(self) -> int:
        """Decode steps completed so far; cheap, any thread."""
        ...

    @property
    def kv_usage(self) -> Optional[float]:
        """Share of the KV cache in use (0..1), or None without a fixed KV pool; cheap, any thread."""
        ...


class EngineStalled(RuntimeError):
    """The engine has had work but completed no decode step for longer than ENGINE_STALL_S: the
    caller fails or falls back instead of waiting on it forever."""


@dataclass
class EngineStats:
    """What an engine's batch loop has done: shows whether concurrent requests share decode steps."""

    decode_steps: int = 0
    tokens: int = 0
    peak_batch: int = 0
    reused_prompt_tokens: int = 0  # prompt tokens whose KV came from a cached prefix

    def record_step(self, batch_width: int) -> None:
        if batch_width:
            self.decode_steps += 1
            self.tokens += batch_width
            self.peak_batch = max(self.peak_batch, batch_width)

    def mean_batch(self) -> float:
        return self.tokens / self.decode_steps if self.decode_steps else 0.0
