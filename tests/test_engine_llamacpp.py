"""The llama.cpp engine on the bundled model: answers, agreement with MLX, batching, cancellation, KV limits.

Skipped where llama-cpp-python is not installed (`make install` builds it off Apple Silicon).
"""
from __future__ import annotations

import threading
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp")

from engines.base import GenerationRequest  # noqa: E402
from engines.llamacpp_engine import LlamaCppEngine  # noqa: E402
from engines.llamacpp_models import resolve_gguf  # noqa: E402
from settings import get_settings  # noqa: E402

PROMPTS = ["What is the capital of France?", "Name a colour.", "Say hi to Sam.", "Count to three."]


def engine_for(tier: str, max_batch: int, **settings_changes) -> LlamaCppEngine:
    settings = get_settings().replace(**settings_changes)
    spec = resolve_gguf(tier, settings=settings)
    return LlamaCppEngine(spec.path, spec.model_id, max_batch, spec.tokenizer_gguf, settings)


@pytest.fixture(scope="module")
def engine():
    return engine_for("small", 4)


def ask(engine, prompt: str, max_tokens: int = 8) -> list:
    return list(engine.generate(GenerationRequest([{"role": "user", "content": prompt}], max_tokens)))


@pytest.mark.parametrize("prompt", ["What is the capital of France?", "Tell me about the sea."])
def test_answers_as_llama_cpp_python_itself_does_token_by_token(engine, prompt):
    from llama_cpp import Llama

    reference = Llama(resolve_gguf("small").path, n_ctx=256, n_threads=1, verbose=False).create_chat_completion(
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


def test_a_request_larger_than_the_kv_cache_is_refused():
    small = engine_for("small", 1, engine_seq_ctx=32)
    with pytest.raises(ValueError, match="exceed the engine's 32 KV tokens"):
        ask(small, "What is the capital of France?", 16)


def test_the_large_tier_answers_exactly_as_the_mlx_float32_tier():
    """Same weights, same tokenizer, float32 activations: greedy decoding agrees token for token."""
    from engines.mlx_engine import MLXEngine
    from engines.models import resolve_model

    spec = resolve_model("large")
    mlx, llama = MLXEngine(spec.load_path, spec.model_id, max_batch=2), engine_for("large", 2)
    for prompt in ["What is the capital of France?", "Tell me about the sea.", "How many legs does a spider have?"]:
        tokens = [[c.token for c in ask(e, prompt, 16) if c.finish_reason != "stop"] for e in (mlx, llama)]
        assert len(tokens[0]) >= 5 and tokens[0] == tokens[1], prompt


def test_tiers_run_the_bundled_weights_expanded_once(monkeypatch, tmp_path):
    from engines.bundled import bundled_gguf_path

    def with_type(kind: str):
        return get_settings().replace(models_dir=str(tmp_path), small_gguf_type=kind)

    spec = resolve_gguf("small", settings=with_type("bf16"))
    assert spec.path == str(tmp_path / f"{bundled_gguf_path().stem}-bf16.gguf")
    assert spec.model_id == "SmolLM2-135M-Instruct-bf16-llamacpp"
    made = Path(spec.path).stat().st_mtime_ns
    again = resolve_gguf("small", settings=with_type("bf16"))
    assert again.path == spec.path and Path(spec.path).stat().st_mtime_ns == made  # made once
    # The expanded file and the tokenizer folder, nothing partial left over.
    assert sorted(p.name for p in tmp_path.iterdir()) == [Path(spec.path).name,
                                                         f"{bundled_gguf_path().stem}-tokenizer"]
    small = engine_for("small", 1, models_dir=str(tmp_path), small_gguf_type="bf16")
    assert "Paris" in "".join(c.text for c in ask(small, "What is the capital of France?", 12))

    assert resolve_gguf("small", settings=with_type("q4_1")).path == str(bundled_gguf_path())
    for native_bf16, kind in [(True, "bf16"), (False, "f16")]:
        monkeypatch.setattr("engines.llamacpp_models.cpu_has_native_bf16", lambda: native_bf16)
        assert resolve_gguf("small", prepare=False, settings=with_type("")).model_id == \
            f"SmolLM2-135M-Instruct-{kind}-llamacpp"
    assert resolve_gguf("large", prepare=False).model_id == "SmolLM2-135M-Instruct-f32-llamacpp"
    with pytest.raises(ValueError, match="SMALL_GGUF_TYPE='q3_k'"):
        resolve_gguf("small", settings=with_type("q3_k"))


def test_the_default_backend_is_llama_cpp_off_apple_silicon_and_mlx_on_it(monkeypatch):
    import platform
    import sys

    from engines.provider import backend_name

    auto = get_settings().replace(engine_backend="auto")
    monkeypatch.setattr(sys, "platform", "linux")
    assert backend_name(auto) == "llamacpp"
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(platform, "machine", lambda: "arm64")
    assert backend_name(auto) == "mlx"
    monkeypatch.setattr(sys, "platform", "linux")
    assert backend_name(get_settings().replace(engine_backend="mlx")) == "mlx"


def test_a_shared_prompt_prefix_is_prefilled_once_without_changing_the_answers():
    prompts = ["What is the capital of France?", "Tell me about the sea.", "What is the capital of Spain?"]
    fresh = engine_for("large", 2, engine_prefix_cache=0)
    expected = [[c.token for c in ask(fresh, p, 12)] for p in prompts]
    assert fresh.stats.reused_prompt_tokens == 0
    sharing = engine_for("large", 2, engine_prefix_cache=8)
    answers = [[c.token for c in ask(sharing, p, 12)] for p in prompts]
    assert answers == expected
    first, second = (sharing.encode(GenerationRequest([{"role": "user", "content": p}])) for p in prompts[:2])
    shared = next(i for i, (a, b) in enumerate(zip(first, second)) if a != b)  # the template's system prompt
    assert shared >= 20
    assert sharing.stats.reused_prompt_tokens >= 2 * shared, "the later prompts reused the system prompt"


def test_a_request_s_n_answers_copy_its_prompt_instead_of_computing_it_again():
    engine = engine_for("small", 4, engine_prefix_cache=0)  # no shared prefix: only the copy can reuse
    prompt = "Explain in detail how a bicycle's gears make climbing a hill easier."
    # 32 tokens: answers 1 and 2 are queued after answer 0's first token, long before its last
    alone = "".join(c.text for c in ask(engine, prompt, 32))
    length = len(engine.encode(GenerationRequest([{"role": "user", "content": prompt}])))
    chunks = list(engine.generate(GenerationRequest([{"role": "user", "content": prompt}], 32, n=3)))
    texts = {i: "".join(c.text for c in chunks if c.index == i) for i in range(3)}
    assert set(texts.values()) == {alone}, "a copied prompt gives the greedy answer a computed one gives"
    assert engine.stats.reused_prompt_tokens == 2 * (length - 1), "answers 1 and 2 copied answer 0's prompt"
    # A batch of two may sum a row's logits in another order than a batch of one (ggml picks its kernel by
    # batch size and CPU), so a sampled answer is compared with the same request again, not with n=1.
    def sampled() -> list[str]:
        chunks = list(engine.generate(GenerationRequest([{"role": "user", "content": prompt}], 12, n=2,
                                                        temperature=1.0, seed=3)))
        return ["".join(c.text for c in chunks if c.index == i) for i in range(2)]

    seeded, again = sampled(), sampled()
    assert seeded == again, "a seeded request draws the same answers again"
    assert seeded[0] != seeded[1], "answer i draws from seed + i"


def test_a_bad_engine_setting_stops_the_web_app_at_start():
    from webapp import create_app

    with pytest.raises(ValueError, match="SMALL_GGUF_TYPE='q3_k'"):
        create_app(get_settings().replace(engine_backend="auto", small_gguf_type="q3_k"))
