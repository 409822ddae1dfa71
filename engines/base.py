"""The engine interface: a request goes in, generated chunks come out."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Iterator, Optional, Protocol


@dataclass
class GenerationRequest:
    """One generation job as the engine sees it."""

    messages: list[dict]
    max_tokens: int = 128
    temperature: float = 0.0
    cancel: threading.Event = field(default_factory=threading.Event)


@dataclass
class GenerationChunk:
    """A piece of generated text; the last one carries a finish reason."""

    text: str
    token: Optional[int] = None
    finish_reason: Optional[str] = None  # "stop", "length", "cancelled"
    prompt_tokens: int = 0


class Engine(Protocol):
    """What a generation worker needs from a model backend."""

    model_id: str
    stats: "EngineStats"

    def generate(self, request: GenerationRequest) -> Iterator[GenerationChunk]:
        """Yield chunks as tokens are produced; stop after a chunk with a finish reason."""
        ...


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
