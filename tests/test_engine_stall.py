"""The llama.cpp engine never freezes: admission beside a long shared prefix, cancelling a parked
request, and callers of a wedged engine (cancel, the stall watchdog).

Skipped where llama-cpp-python is not installed (`make install` builds it off Apple Silicon).
"""
from __future__ import annotations

import threading
import time

import pytest

pytest.importorskip("llama_cpp")

from engines.base import EngineStalled, GenerationRequest  # noqa: E402
from engines.threaded import CANCEL_GRACE_S  # noqa: E402
from test_engine_llamacpp import engine_for  # noqa: E402

pytestmark = pytest.mark.slow  # loads the model in the test process

# About 1,300 tokens once chat-templated: long enough to fill most of a 2048-token pool as the shared prefix.
LONG_PROMPT = "The quick brown fox jumps over the lazy dog near the quiet river bank. " * 80 + "Summarise this."


def request(prompt: str, max_tokens: int) -> GenerationRequest:
    return GenerationRequest([{"role": "user", "content": prompt}], max_tokens)


def answer_within(engine, req: GenerationRequest, seconds: float) -> list:
    """The request's chunks; fails (instead of hanging the suite) when it has not finished in `seconds`."""
    chunks: list = []
    reader = threading.Thread(target=lambda: chunks.extend(engine.generate(req)), daemon=True)
    reader.start()
    reader.join(seconds)
    assert not reader.is_alive(), f"no answer within {seconds}s: the engine froze"
    return chunks


@pytest.mark.timeout(120)
def test_a_request_that_fits_the_pool_but_not_beside_the_shared_prefix_is_still_admitted():
    """The issue's freeze: the first prompt becomes the shared prefix; a request that fits the pool on its
    own but not beside that prefix was parked forever, and every later request queued behind it."""
    engine = engine_for("small", 1, engine_seq_ctx=2048)
    first = engine.encode(request(LONG_PROMPT, 8))
    assert 1200 <= len(first) <= 1400
    assert answer_within(engine, request(LONG_PROMPT, 8), 60)[-1].finish_reason in ("stop", "length")
    hi_need = len(engine.encode(request("Say hi.", 1000))) + 1000
    assert engine._prefix.tokens == first and len(first) + hi_need > engine.kv_tokens >= hi_need  # the freeze's set-up

    started, reused = time.monotonic(), engine.stats.reused_prompt_tokens
    hi = answer_within(engine, request("Say hi.", 1000), 60)
    assert hi[-1].finish_reason in ("stop", "length"), hi[-1]
    assert engine.stats.reused_prompt_tokens > reused, "the prefix gave way only down to the shared system prompt"
    after = answer_within(engine, request("What is the capital of France?", 8), 30)
    assert after[-1].finish_reason in ("stop", "length")
    print(f"'Say hi.' and the next request answered in {time.monotonic() - started:.2f}s")

    cpu = time.process_time()
    time.sleep(1.0)
    assert time.process_time() - cpu < 0.5, "an idle engine loop must block on its inbox, not spin (~1 s)"


def wait_for(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def read_in_background(engine, req: GenerationRequest) -> tuple[threading.Thread, list]:
    chunks: list = []
    reader = threading.Thread(target=lambda: chunks.extend(engine.generate(req)), daemon=True)
    reader.start()
    return reader, chunks


@pytest.mark.timeout(60)
def test_a_parked_request_is_answered_cancelled_at_once_without_waiting_for_kv_room(monkeypatch):
    engine = engine_for("small", 2, engine_seq_ctx=256)  # a 512-token pool for two slots
    # The running request must keep its KV until the end of the test, so it may not stop early.
    monkeypatch.setattr(engine, "_stop_tokens", set())
    long = request("Tell me a long story.", 440)  # ~470 of the 512 KV tokens
    long_reader, long_chunks = read_in_background(engine, long)
    wait_for(lambda: long_chunks)
    parked = request("Say hi.", 200)  # fits the pool alone, not beside the running request
    parked_reader, parked_chunks = read_in_background(engine, parked)
    # the engine holds the request's answer (a copy of it that shares its messages)
    wait_for(lambda: engine._held is not None and engine._held[0].messages is parked.messages)

    cancelled_at = time.monotonic()
    parked.cancel.set()
    parked_reader.join(5)
    took = time.monotonic() - cancelled_at
    assert [c.finish_reason for c in parked_chunks] == ["cancelled"]
    assert engine._held is None and took < CANCEL_GRACE_S, f"{took:.2f}s: the engine itself must answer it"
    assert long_reader.is_alive(), "the running request still holds the pool"
    long.cancel.set()
    long_reader.join(5)
    assert long_chunks[-1].finish_reason == "cancelled"


@pytest.mark.timeout(60)
def test_callers_of_a_wedged_engine_are_freed_and_the_watchdog_sees_it(monkeypatch):
    engine = engine_for("small", 2, engine_stall_s=0.5)
    assert answer_within(engine, request("Name a colour.", 4), 30)[-1].finish_reason in ("stop", "length")
    time.sleep(0.7)  # idle for longer than ENGINE_STALL_S is not a stall
    assert engine.stalled_for() == 0.0 and not engine.stalled()

    release = threading.Event()
    step = engine._step
    monkeypatch.setattr(engine, "_step", lambda running: (release.wait(), step(running)))  # a decode that hangs
    try:
        wedged = request("Tell me about the sea.", 50)
        reader, chunks = read_in_background(engine, wedged)
        wait_for(lambda: engine.stalled_for() > 0.1)
        cancelled_at = time.monotonic()
        wedged.cancel.set()
        reader.join(5)
        assert [c.finish_reason for c in chunks] == ["cancelled"]
        assert time.monotonic() - cancelled_at < 2, "a cancel ends the caller's wait though the engine cannot answer"

        started = time.monotonic()
        with pytest.raises(EngineStalled, match="without a decode step"):
            list(engine.generate(request("Name a colour.", 4)))
        assert time.monotonic() - started < 2
        stalled_for = engine.stalled_for()
        assert stalled_for > 0.5 and engine.stalled()
        time.sleep(0.2)
        assert engine.stalled_for() > stalled_for  # grows while the engine has work and takes no step
    finally:
        release.set()

    wait_for(lambda: engine.stalled_for() == 0.0, 5)  # the wedged step ends; the abandoned requests are dropped
    assert not engine.stalled()
    assert answer_within(engine, request("Name a colour.", 4), 30)[-1].finish_reason in ("stop", "length")
