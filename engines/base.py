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

    def generate(self, request: GenerationRequest) -> Iterator[GenerationChunk]:
        """Yield chunks as tokens are produced; stop after a chunk with a finish reason."""
        ...
