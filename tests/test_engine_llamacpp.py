"""The optional llama.cpp backend on the bundled GGUF: answers, batching, cancellation, KV limits.

Skipped where llama-cpp-python is not installed (it is not in the default install).
"""
from __future__ import annotations

import threading

import pytest

pytest.importorskip("llama_cpp")

from engines.base import GenerationRequest  # noqa: E402
from engines.llamacpp_engine import LlamaCppEngine, resolve_gguf  # noqa: E402

PROMPTS = ["What is the capital of France?", "Name a colour.", "Say hi to Sam.", "Count to three."]


@pytest.fixture(scope="module")
def engine():
    path, model_id = resolve_gguf("small")
    return LlamaCppEngine(path, model_id, max_batch=4)


def ask(engine, prompt: str, max_tokens: int = 8) -> list:
    return list(engine.generate(GenerationRequest([{"role": "user", "content": prompt}], max_tokens)))


@pytest.mark.parametrize("prompt", ["What is the capital of France?", "Tell me about the sea."])
def test_answers_as_llama_cpp_python_itself_does_token_by_token(engine, prompt):
    from llama_cpp import Llama

    path, _ = resolve_gguf("small")
    reference = Llama(path, n_ctx=256, n_threads=1, verbose=False).create_chat_completion(
        [{"role": "user", "content": prompt}], max_tokens=8, temperature=0)["choices"][0]["message"]["content"]
    chunks = ask(engine, prompt)
    assert "".join(c.text for c in chunks) == reference and reference.strip()
    assert chunks[-1].finish_reason in ("stop", "length")
    assert all(c.finish_reason is None for c in chunks[:-1])
    assert chunks[0].prompt_tokens > 5


def test_concurrent_requests_share_decode_steps(engine):
    before = (engine.stats.decode_steps, engine.stats.tokens)
    answers: dict[str, str] = {}
    threads = [threading.Thread(target=lambda p=p: answers.__setitem__(p, "".join(c.text for c in ask(engine, p))))
               for p in PROMPTS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(answers) == len(PROMPTS) and all(answers.values())
    steps, tokens = engine.stats.decode_steps - before[0], engine.stats.tokens - before[1]
    assert engine.stats.peak_batch >= 2
    assert steps < tokens, f"{tokens} tokens took {steps} decode steps: nothing was batched"


def test_a_reader_that_stops_early_frees_its_slot(engine):
    stream = engine.generate(GenerationRequest([{"role": "user", "content": "Tell me a long story."}], 200))
    next(stream)
    stream.close()  # the caller goes away
    answers = [ask(engine, p, 4) for p in PROMPTS * 2]  # more requests than slots still all finish
    assert all(a[-1].finish_reason in ("stop", "length") for a in answers)


def test_a_request_larger_than_the_kv_cache_is_refused(monkeypatch):
    monkeypatch.setenv("ENGINE_SEQ_CTX", "32")
    path, model_id = resolve_gguf("small")
    small = LlamaCppEngine(path, model_id, max_batch=1)
    with pytest.raises(ValueError, match="exceed the engine's 32 KV tokens"):
        ask(small, "What is the capital of France?", 16)
