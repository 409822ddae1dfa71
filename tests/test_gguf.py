"""Tests for engines.gguf: GGUF -> MLX folder conversion of the bundled SmolLM2 (and the MLX-free metadata reader)."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import pytest

from engines import gguf
from engines.gguf import bundled_gguf_path, convert_gguf
from engines.gguf_tokenizer import build_tokenizer_folder, read_metadata

HIDDEN = 576
VOCAB = 49152
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled GGUF converted once, keeping its quantization."""
    return convert_gguf(bundled_gguf_path(), tmp_path_factory.mktemp("gguf") / "small",
                        progress=lambda _: None)


@pytest.fixture(scope="module")
def large_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled GGUF converted once to float32."""
    return convert_gguf(bundled_gguf_path(), tmp_path_factory.mktemp("gguf") / "large",
                        dequantize=True, progress=lambda _: None)


@pytest.fixture(scope="module")
def small_model(small_dir: Path):
    import mlx_lm

    return mlx_lm.load(str(small_dir))


def _config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def _greedy_answer(model, tokenizer) -> str:
    import mlx_lm

    prompt = tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=False)
    # No sampler given: mlx_lm.generate samples greedily (argmax).
    return mlx_lm.generate(model, tokenizer, prompt=prompt, max_tokens=12)


def test_bundled_path_exists() -> None:
    path = bundled_gguf_path()
    assert path.is_file() and path.suffix == ".gguf"


def test_folder_contents_and_no_leftovers(small_dir: Path) -> None:
    names = {p.name for p in small_dir.iterdir()}
    assert names == {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}
    # The temp build folder was renamed, not left beside the result.
    assert [p.name for p in small_dir.parent.iterdir()] == ["small"]


def test_small_config(small_dir: Path) -> None:
    config = _config(small_dir)
    assert config["model_type"] == "llama"
    assert config["hidden_size"] == HIDDEN
    assert config["num_hidden_layers"] == 30
    assert config["intermediate_size"] == 1536
    assert config["num_attention_heads"] == 9
    assert config["num_key_value_heads"] == 3
    assert config["vocab_size"] == VOCAB
    assert config["rope_theta"] == 100000.0
    assert config["max_position_embeddings"] == 8192
    assert config["rope_traditional"] is True
    assert config["tie_word_embeddings"] is True
    assert config["eos_token_id"] == 2
    assert config["rms_norm_eps"] == pytest.approx(1e-5)
    quant = config["quantization"]
    assert (quant["group_size"], quant["bits"]) == (32, 4)
    # This Q4_1 file stores its (tied) embedding as Q8_0: a per-module override.
    assert quant["model.embed_tokens"] == {"group_size": 32, "bits": 8}


def test_small_weights(small_dir: Path) -> None:
    w = mx.load(str(small_dir / "model.safetensors"))
    assert w["model.embed_tokens.weight"].dtype == mx.uint32
    assert w["model.embed_tokens.weight"].shape == (VOCAB, HIDDEN * 8 // 32)
    assert w["model.embed_tokens.scales"].shape == (VOCAB, HIDDEN // 32)
    assert w["model.layers.0.self_attn.q_proj.weight"].shape == (HIDDEN, HIDDEN * 4 // 32)
    assert w["model.layers.0.self_attn.k_proj.scales"].shape == (192, HIDDEN // 32)
    assert w["model.layers.29.mlp.down_proj.biases"].shape == (HIDDEN, 1536 // 32)
    assert w["model.norm.weight"].shape == (HIDDEN,)
    assert "lm_head.weight" not in w
    assert not any(k.startswith(("blk.", "token_embd", "output")) for k in w)


def test_large_config_and_weights(large_dir: Path) -> None:
    config = _config(large_dir)
    assert "quantization" not in config
    assert config["hidden_size"] == HIDDEN
    w = mx.load(str(large_dir / "model.safetensors"))
    assert not any(k.endswith((".scales", ".biases")) for k in w)
    assert all(v.dtype == mx.float32 for v in w.values())
    assert w["model.embed_tokens.weight"].shape == (VOCAB, HIDDEN)
    assert w["model.layers.0.mlp.down_proj.weight"].shape == (HIDDEN, 1536)
    assert w["model.layers.0.input_layernorm.weight"].shape == (HIDDEN,)


def test_large_matches_small_dequantized(small_dir: Path, large_dir: Path) -> None:
    small = mx.load(str(small_dir / "model.safetensors"))
    large = mx.load(str(large_dir / "model.safetensors"))
    name = "model.layers.3.self_attn.v_proj"
    # float32 scales/biases: the converter dequantizes at full precision
    # (float16 arithmetic would round the weights, as llama.cpp does not).
    dense = mx.dequantize(small[f"{name}.weight"], small[f"{name}.scales"].astype(mx.float32),
                          small[f"{name}.biases"].astype(mx.float32), group_size=32, bits=4)
    assert mx.array_equal(dense, large[f"{name}.weight"]).item()


def test_tokenizer_config(small_dir: Path) -> None:
    config = json.loads((small_dir / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert config["add_bos_token"] is False
    assert config["bos_token"] == "<|im_start|>"
    assert config["eos_token"] == "<|im_end|>"
    assert config["pad_token"] == "<|im_end|>"
    assert config["unk_token"] == "<|endoftext|>"
    assert "<|im_start|>" in config["chat_template"]
    assert config["model_max_length"] == 8192


def test_metadata_reader_agrees_with_mlx() -> None:
    """engines.gguf_tokenizer reads the GGUF header itself (no MLX): the same values mx.load gives."""
    _, expected = mx.load(str(bundled_gguf_path()), return_metadata=True)
    assert read_metadata(bundled_gguf_path()) == {k: gguf._plain(v) for k, v in expected.items()}


def test_the_mlx_free_tokenizer_folder_holds_the_same_files(small_dir: Path, tmp_path: Path) -> None:
    """The llama.cpp engine's tokenizer folder and the MLX folder are written by the same code from the same GGUF."""
    folder = build_tokenizer_folder(bundled_gguf_path(), tmp_path / "tokenizer", progress=lambda _: None)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (folder / name).read_bytes() == (small_dir / name).read_bytes(), name
    assert sorted(p.name for p in folder.iterdir()) == ["tokenizer.json", "tokenizer_config.json"]


def test_tokenizer_special_tokens_and_round_trip(small_model) -> None:
    _, tok = small_model
    assert tok.encode("<|im_end|>") == [2]
    assert tok.encode("<|im_start|>") == [1]
    assert tok.eos_token_ids == {2}
    ids = tok.encode("Hello world 123")
    assert ids[0] != 1  # no BOS added
    assert ids[-3:] == [33, 34, 35]  # digits are split one by one
    assert tok.decode(ids) == "Hello world 123"
    text = "Ünïcode — 東京 😀 tabs\tand\nnewlines"
    assert tok.decode(tok.encode(text)) == text


def test_small_greedy_answer(small_model) -> None:
    answer = _greedy_answer(*small_model)
    assert "Paris" in answer


def test_large_greedy_answer(large_dir: Path) -> None:
    import mlx_lm

    answer = _greedy_answer(*mlx_lm.load(str(large_dir)))
    assert "Paris" in answer


def test_rejects_other_architectures(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(gguf.mx, "load", lambda *a, **k: ({}, {"general.architecture": "qwen2"}))
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="qwen2"):
        convert_gguf(tmp_path / "fake.gguf", out, progress=lambda _: None)
    assert not out.exists()


def test_interrupted_conversion_leaves_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def boom(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(gguf, "write_tokenizer", boom)
    with pytest.raises(KeyboardInterrupt):
        convert_gguf(bundled_gguf_path(), tmp_path / "out", progress=lambda _: None)
    assert list(tmp_path.iterdir()) == []


def test_reconvert_replaces_existing_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    lines: list[str] = []
    assert convert_gguf(bundled_gguf_path(), out, progress=lines.append) == out
    assert not (out / "stale.txt").exists()
    assert (out / "config.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert lines[0].startswith("converting ") and " -> " in lines[0]
    assert "writing weights" in lines
    assert lines[-1].startswith("done in ") and lines[-1].endswith(" s")
