"""How the engine thread hands a request's chunks to its caller (engines.threaded.Active): each at once
for a stream, in batches for a caller that wants the whole answer. No model: a detokenizer of our own."""
from __future__ import annotations

import queue

import pytest

from engines import threaded
from engines.base import GenerationRequest
from engines.threaded import Active


class Letters:
    """A detokenizer that turns token i into the letter chr(ord('a') + i)."""

    def __init__(self) -> None:
        self.text, self.read = "", 0

    def add_token(self, token: int) -> None:
        self.text += chr(ord("a") + token)

    def finalize(self) -> None:
        pass

    @property
    def last_segment(self) -> str:
        segment, self.read = self.text[self.read:], len(self.text)
        return segment


def active(**fields) -> tuple[Active, queue.Queue]:
    outbox: queue.Queue = queue.Queue()
    return Active(GenerationRequest([{"role": "user", "content": "hi"}], 8, **fields), outbox, Letters(), 3), outbox


def drained(outbox: queue.Queue) -> list[str]:
    texts = []
    while not outbox.empty():
        chunk = outbox.get_nowait()
        texts.append(chunk.text + (f"|{chunk.finish_reason}" if chunk.finish_reason else ""))
    return texts


@pytest.fixture
def clock(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(threaded.time, "monotonic", lambda: now[0])
    return now


def test_a_stream_gets_each_chunk_at_once(clock):
    entry, outbox = active()
    for token in range(3):
        entry.emit(token, None)
        assert drained(outbox) == ["abc"[token]]


def test_a_whole_answer_comes_first_chunk_at_once_then_in_batches_and_whole_at_the_end(clock):
    entry, outbox = active(streamed=False)
    entry.emit(0, None)
    assert drained(outbox) == ["a"], "the first token at once: the job's time to first token"
    entry.emit(1, None)
    entry.emit(2, None)
    assert drained(outbox) == [], "held: the caller is not woken per token"
    clock[0] += threaded.HAND_OVER_S
    entry.emit(3, None)
    assert drained(outbox) == ["b", "c", "d"], "a batch once HAND_OVER_S has passed, in order"
    entry.emit(4, None)
    entry.emit(5, "length")
    assert drained(outbox) == ["e", "f|length"], "the end hands over everything held"


def test_a_cancel_hands_over_what_was_held_first(clock):
    entry, outbox = active(streamed=False)
    entry.emit(0, None)
    entry.emit(1, None)
    entry.cancel()
    assert drained(outbox) == ["a", "b", "|cancelled"]


def test_a_whole_answer_with_stop_strings_gets_each_chunk_at_once(clock):
    """The caller matches stop strings: a batch would let the engine decode past one."""
    entry, outbox = active(streamed=False, stop=("zz",))
    for token in range(3):
        entry.emit(token, None)
        assert drained(outbox) == ["abc"[token]]
