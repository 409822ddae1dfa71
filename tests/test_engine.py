"""The engine on the real model: concurrent requests share decode steps, OpenBLAS keeps the answers, config errors are clear."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from engines.base import GenerationRequest
from engines.blas import find_openblas
from engines.models import resolve_model
from helpers import job_store

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPTS = ["What is the capital of France?", "Name a colour.", "Say hi to Sam.", "Count to three."]


@pytest.fixture(scope="module")
def large_engine():
    from engines.mlx_engine import MLXEngine

    spec = resolve_model("large")
    return MLXEngine(spec.load_path, spec.model_id, max_batch=4)


def answer(engine, prompt: str, max_tokens: int = 6) -> list[int]:
    request = GenerationRequest([{"role": "user", "content": prompt}], max_tokens)
    return [c.token for c in engine.generate(request) if c.token is not None and c.finish_reason != "stop"]


def test_concurrent_requests_share_decode_steps_and_keep_their_answers(large_engine):
    alone = {prompt: answer(large_engine, prompt) for prompt in PROMPTS}
    before = (large_engine.stats.decode_steps, large_engine.stats.tokens)
    together: dict[str, list[int]] = {}
    threads = [threading.Thread(target=lambda p=p: together.__setitem__(p, answer(large_engine, p))) for p in PROMPTS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)

    steps = large_engine.stats.decode_steps - before[0]
    tokens = large_engine.stats.tokens - before[1]
    assert together == alone, "batching changed a greedy answer"
    assert large_engine.stats.peak_batch >= 2
    assert steps < tokens, f"{tokens} tokens took {steps} decode steps: nothing was batched"


def test_a_shared_prompt_prefix_is_reused_without_changing_the_answer():
    from engines.mlx_engine import MLXEngine

    spec = resolve_model("large")
    engine = MLXEngine(spec.load_path, spec.model_id, max_batch=2)  # a fresh, empty prefix cache
    cold = answer(engine, "Why is the sky blue?")
    assert engine.stats.reused_prompt_tokens == 0
    answer(engine, "Name a colour.")
    reused = engine.stats.reused_prompt_tokens
    assert reused > 20, "the chat template's system prompt was computed again"
    assert answer(engine, "Why is the sky blue?") == cold
    assert engine.stats.reused_prompt_tokens > reused


def test_answers_stream_token_by_token(large_engine):
    request = GenerationRequest([{"role": "user", "content": "Tell me about the sea."}], 5)
    chunks = list(large_engine.generate(request))
    assert len(chunks) == 5 and chunks[-1].finish_reason == "length"
    assert all(c.finish_reason is None for c in chunks[:-1])
    assert chunks[0].prompt_tokens > 5


def _greedy_in_subprocess(blas: str) -> dict:
    script = (
        "import json\n"
        "from engines.blas import blas_in_use, enable_fast_blas\n"
        "enable_fast_blas()  # the start-up step a worker takes before MLX loads\n"
        "from engines.mlx_engine import MLXEngine\n"
        "from engines.models import resolve_model\n"
        "from engines.base import GenerationRequest\n"
        "spec = resolve_model('large')\n"
        "engine = MLXEngine(spec.load_path, spec.model_id, max_batch=2)\n"
        "req = GenerationRequest([{'role': 'user', 'content': 'What is the capital of France?'}], 8)\n"
        "tokens = [c.token for c in engine.generate(req) if c.token is not None and c.finish_reason != 'stop']\n"
        "import ctypes\n"
        "threads = ctypes.CDLL(blas_in_use()).openblas_get_num_threads() if blas_in_use() else None\n"
        "print(json.dumps({'blas': blas_in_use(), 'threads': threads, 'tokens': tokens}))\n"
    )
    env = {**os.environ, "ENGINE_BLAS": blas}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(find_openblas() is None, reason="OpenBLAS is not installed (make install installs it)")
def test_openblas_gives_the_same_greedy_answer_as_the_bundled_blas():
    fast, reference = _greedy_in_subprocess("auto"), _greedy_in_subprocess("off")
    assert fast["blas"] == find_openblas()
    assert fast["threads"] == 1, "OpenBLAS threads spin against each other on a busy machine"
    assert reference["blas"] is None
    assert len(fast["tokens"]) >= 5
    assert fast["tokens"] == reference["tokens"]


def test_an_unknown_backend_is_a_clear_error():
    from engines.provider import backend_name
    from settings import get_settings

    with pytest.raises(ValueError, match="ENGINE_BACKEND='tensorrt'.*mlx"):
        backend_name(get_settings().replace(engine_backend="tensorrt"))


@pytest.mark.usefixtures("workers")
def test_concurrent_jobs_generate_at_the_same_time_in_one_worker(client):
    ids = [client.post("/v1/jobs", json={"prompt": p, "max_tokens": 6, "tier": "large"}).get_json()["id"]
           for p in PROMPTS]
    records = {}
    deadline = time.time() + 300
    while len(records) < len(ids) and time.time() < deadline:
        for job_id in ids:
            record = job_store().get(job_id)
            if record and record["status"] in ("succeeded", "failed"):
                records[job_id] = record
        time.sleep(0.2)
    assert len(records) == len(ids), "jobs did not finish"
    assert all(r["status"] == "succeeded" for r in records.values())
    last_start = max(r["generation_started_at"] for r in records.values())
    first_end = min(r["finished_at"] for r in records.values())
    assert last_start < first_end, "the worker ran the jobs one after another"


def test_expanding_the_4bit_model_gives_exactly_the_fp32_tier_weights():
    import mlx.core as mx
    import mlx_lm
    from mlx.utils import tree_flatten

    from engines.mlx_engine import expand_quantized

    small, _ = mlx_lm.load(resolve_model("small").load_path)
    large, _ = mlx_lm.load(resolve_model("large").load_path)
    assert expand_quantized(small) > 0
    expanded, reference = dict(tree_flatten(small.parameters())), dict(tree_flatten(large.parameters()))
    assert expanded.keys() == reference.keys()
    for name, value in reference.items():
        assert expanded[name].dtype == mx.float32
        assert mx.array_equal(expanded[name], value), name
