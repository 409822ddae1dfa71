"""The llama.cpp path and the web app run without importing MLX; the MLX-free tokenizer streams text exactly.

The import checks run in fresh interpreters: this test process may have imported MLX for other tests.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engines.bundled import bundled_gguf_path
from engines.gguf_tokenizer import build_tokenizer_folder
from engines.hf_tokenizer import ChatTokenizer, StreamingDetokenizer
from engines.llamacpp_models import resolve_gguf
from engines.models import resolve_model, tokenizer_folder_for_gguf

ROOT = Path(__file__).resolve().parent.parent
MULTI_BYTE = "héllo 日本語 🙂 Ünïcode — 東京 😀 tabs\tand\nnewlines"
# Printed by the child as its last line: the MLX modules it has imported.
REPORT = """
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("mlx", "mlx_lm"))
print(json.dumps({"result": result, "mlx_modules": loaded}))
"""


def run_fresh(code: str, **env: str) -> dict:
    """Run `code` (which sets `result`) in a new interpreter; its result and the MLX modules it imported."""
    script = "import json, sys\n" + textwrap.dedent(code) + REPORT
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tokenizer_folder(bundled_gguf_path(), tmp_path_factory.mktemp("tok") / "tokenizer",
                                  progress=lambda _: None)


@pytest.fixture(scope="module")
def tokenizer(folder: Path) -> ChatTokenizer:
    return ChatTokenizer(folder)


def stream(tokenizer: ChatTokenizer, tokens: list[int]) -> list[str]:
    """The pieces a streaming detokenizer hands out for `tokens`, the last one after finalize."""
    detokenizer = tokenizer.detokenizer
    pieces = []
    for token in tokens:
        detokenizer.add_token(token)
        pieces.append(detokenizer.last_segment)
    detokenizer.finalize()
    return pieces + [detokenizer.last_segment]


def test_the_llama_cpp_engine_generates_without_importing_mlx():
    pytest.importorskip("llama_cpp")
    report = run_fresh("""
        from engines.base import GenerationRequest
        from engines.provider import create_engine

        engine = create_engine("small")
        request = GenerationRequest([{"role": "user", "content": "What is the capital of France?"}], max_tokens=6)
        chunks = list(engine.generate(request))
        result = {"text": "".join(c.text for c in chunks), "finish": chunks[-1].finish_reason,
                  "prompt_tokens": chunks[0].prompt_tokens}
    """, ENGINE_BACKEND="llamacpp")
    assert report["mlx_modules"] == []
    assert report["result"]["text"].strip() and report["result"]["finish"] in ("stop", "length")
    assert report["result"]["prompt_tokens"] > 5


@pytest.mark.parametrize("backend", ["llamacpp", "mlx"])
def test_the_web_app_counts_prompt_tokens_without_importing_mlx(backend, tokenizer):
    if backend == "llamacpp":  # what `make models` leaves for the web app to find
        tokenizer_folder_for_gguf(resolve_gguf("small", prepare=False).tokenizer_gguf, progress=lambda _: None)
    report = run_fresh("""
        from webapp import create_app
        from webapp.tokens import prompt_tokens, tokenizer_folder

        create_app()  # the whole web app, as gunicorn builds it
        result = {"count": prompt_tokens("hello 日本語"), "folder": str(tokenizer_folder("small"))}
    """, ENGINE_BACKEND=backend)
    assert report["mlx_modules"] == []
    if backend == "llamacpp":  # the engine's own tokenizer folder, not an MLX one
        assert report["result"]["folder"] == str(tokenizer_folder_for_gguf(bundled_gguf_path(), prepare=False))
        assert report["result"]["count"] == len(tokenizer.encode("hello 日本語")) > 0
    else:
        assert report["result"]["folder"] == resolve_model("small", prepare=False).load_path


def test_the_streaming_detokenizer_never_splits_a_character(tokenizer, folder):
    from transformers import AutoTokenizer

    tokens = tokenizer.encode(MULTI_BYTE)
    pieces = stream(tokenizer, tokens)
    assert "".join(pieces) == AutoTokenizer.from_pretrained(str(folder)).decode(tokens) == MULTI_BYTE
    assert not any("\ufffd" in piece for piece in pieces)
    assert "" in pieces, "an emoji's bytes span several tokens: the first of them emit nothing"


def test_the_streaming_detokenizer_adds_up_to_decode_on_any_token_sequence(tokenizer):
    """Random ids: broken UTF-8, special tokens, stray spaces; the pieces still add up to decode(all)."""
    rng = random.Random(7)
    byte_tokens = tokenizer.encode("日本語🙂😀—")  # pieces of multi-byte characters, to split them often
    for _ in range(200):
        tokens = [rng.choice(byte_tokens) if rng.random() < 0.5 else rng.randrange(49152) for _ in range(24)]
        assert "".join(stream(tokenizer, tokens)) == tokenizer.decode(tokens), tokens


def test_the_streaming_detokenizer_keeps_a_leading_space_decoders_strip():
    """A decoder that drops the first token's leading space (SentencePiece-style): the window's first token
    is already emitted text, so the spaces of later tokens survive."""
    words = {1: " Hello", 2: " world", 3: "!"}

    def decode(tokens: list[int]) -> str:
        return "".join(words[t] for t in tokens).removeprefix(" ")

    detokenizer = StreamingDetokenizer(decode)
    pieces = []
    for token in (1, 2, 3, 2):
        detokenizer.add_token(token)
        pieces.append(detokenizer.last_segment)
    assert "".join(pieces) == decode([1, 2, 3, 2]) == "Hello world! world"


def test_the_chat_prompt_and_stop_tokens(tokenizer):
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True)
    text = tokenizer.decode(prompt)
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>user\nHi<|im_end|>\n"
                                                                      "<|im_start|>assistant\n")
    assert tokenizer.eos_token_ids == {2}


def test_the_tokenizer_folder_is_built_once_and_whole(tmp_path):
    target = tmp_path / "tokenizer"
    lines: list[str] = []
    build_tokenizer_folder(bundled_gguf_path(), target, progress=lines.append)
    made = (target / "tokenizer.json").stat().st_mtime_ns
    assert len(lines) == 1 and str(target) in lines[0]
    # Another process finished first: its folder is kept and ours dropped, nothing partial left.
    build_tokenizer_folder(bundled_gguf_path(), target, progress=lines.append)
    assert (target / "tokenizer.json").stat().st_mtime_ns == made
    assert [p.name for p in tmp_path.iterdir()] == ["tokenizer"]


def test_a_file_that_is_not_gguf_is_refused(tmp_path):
    from engines.gguf_tokenizer import read_metadata

    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"not a gguf file")
    with pytest.raises(ValueError, match="not a GGUF file"):
        read_metadata(fake)
    truncated = tmp_path / "truncated.gguf"
    with open(bundled_gguf_path(), "rb") as source:
        truncated.write_bytes(source.read(4096))
    with pytest.raises(ValueError, match="ends early"):
        read_metadata(truncated)
