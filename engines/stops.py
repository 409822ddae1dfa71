"""Stop strings: an answer ends where one appears, and the text from it on is never returned.

Text that could be the start of a stop string is held back until the next token shows whether it
is one, so a stream never sends text it must take back (llama-server does the same).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Iterator, Sequence

from engines.base import GenerationChunk


class StopMatcher:
    """Cuts one answer's chunks at the first stop string."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self._held = ""  # text that may be the start of a stop string

    def feed(self, chunk: GenerationChunk) -> Iterator[GenerationChunk]:
        """The chunks to pass on for `chunk`: its text less what is held back; a match ends the answer
        with finish_reason "stop" (after a chunk that carries the matching token)."""
        if not self.stops:
            yield chunk
            return
        text = self._held + chunk.text
        cut = min((i for i in (text.find(stop) for stop in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self._held = ""
            if chunk.finish_reason in ("stop", "cancelled"):  # the end-of-text token or none: not to be counted
                yield replace(chunk, text=text[:cut], finish_reason="stop")
                return
            yield replace(chunk, text=text[:cut], finish_reason=None)
            yield GenerationChunk("", finish_reason="stop", prompt_tokens=chunk.prompt_tokens, index=chunk.index)
            return
        if chunk.finish_reason:
            self._held = ""
            yield replace(chunk, text=text)
            return
        keep = self._partial_suffix(text)
        self._held = text[len(text) - keep:] if keep else ""
        yield replace(chunk, text=text[:len(text) - keep])

    def _partial_suffix(self, text: str) -> int:
        """Length of the longest end of `text` that begins some stop string."""
        longest = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(text)), longest, -1):
                if stop.startswith(text[-size:]):
                    longest = size
                    break
        return longest
