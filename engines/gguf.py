"""Convert a llama-architecture GGUF file into an MLX model folder.

`mx.load` already reads GGUF (Q4_0 / Q4_1 / Q8_0 come back as MLX affine
quantized triples: packed uint32 `.weight`, float16 `.scales` and `.biases`),
so conversion is mostly renaming tensors, writing a `config.json` that
mlx-lm's llama model understands, and rebuilding a Hugging Face
`tokenizer.json` from the tokenizer tables stored in the GGUF metadata
(engines.gguf_tokenizer, which the llama.cpp engine uses without MLX).
"""

from __future__ import annotations

import re
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import mlx.core as mx

from engines.bundled import bundled_gguf_path  # noqa: F401  (re-exported: the converter's default input)
from engines.gguf_tokenizer import partial_dir, replace_dir, write_json, write_tokenizer

# GGUF per-layer tensor name -> mlx-lm llama module path (under model.layers.N).
_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_TOP_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
_BLOCK_RE = re.compile(r"^blk\.(\d+)\.([a-z_]+)$")
_SUFFIXES = ("weight", "scales", "biases")


def convert_gguf(
    gguf_path: Path,
    out_dir: Path,
    dequantize: bool = False,
    progress: Callable[[str], None] = print,
) -> Path:
    """Convert `gguf_path` into an MLX model folder at `out_dir` and return it.

    With `dequantize=False` the quantized tensors are kept as they are (4-bit
    for Q4_*); with `dequantize=True` every weight is written as float32.
    The folder is built beside `out_dir` and renamed into place at the end,
    so an interrupted run never leaves a folder that looks complete.
    An existing `out_dir` is replaced.
    """
    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    start = time.perf_counter()
    progress(f"converting {gguf_path} -> {out_dir}")
    tensors, meta = mx.load(str(gguf_path), return_metadata=True)
    meta = {k: _plain(v) for k, v in meta.items()}
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise ValueError(
            f"unsupported GGUF architecture {arch!r} in {gguf_path}: only 'llama' is supported"
        )

    config = _model_config(meta, tensors)
    weights = _rename_tensors(tensors)
    if dequantize:
        weights = _dequantize_all(weights, config)
    else:
        quantization = _quantization_config(weights, config)
        if quantization:
            config["quantization"] = quantization

    tmp = partial_dir(out_dir)
    try:
        progress("writing weights")
        mx.save_safetensors(str(tmp / "model.safetensors"), weights, metadata={"format": "mlx"})
        write_json(tmp / "config.json", config)
        progress("writing tokenizer")
        write_tokenizer(meta, tmp)
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    progress(f"done in {time.perf_counter() - start:.1f} s")
    return out_dir


# --- metadata -------------------------------------------------------------


def _plain(value: Any) -> Any:
    """Turn mx.array metadata into Python values (0-d -> scalar, 1-d -> list)."""
    if isinstance(value, mx.array):
        return value.item() if value.ndim == 0 else value.tolist()
    return value


def _model_config(meta: dict[str, Any], tensors: dict[str, mx.array]) -> dict[str, Any]:
    """Build an mlx-lm llama `config.json` from `llama.*` metadata."""
    hidden = int(meta["llama.embedding_length"])
    heads = int(meta["llama.attention.head_count"])
    tokens = meta["tokenizer.ggml.tokens"]
    config: dict[str, Any] = {
        "model_type": "llama",
        "hidden_size": hidden,
        "num_hidden_layers": int(meta["llama.block_count"]),
        "intermediate_size": int(meta["llama.feed_forward_length"]),
        "num_attention_heads": heads,
        "num_key_value_heads": int(meta.get("llama.attention.head_count_kv", heads)),
        "rms_norm_eps": float(meta["llama.attention.layer_norm_rms_epsilon"]),
        # Older GGUFs omit vocab_size; the token table is authoritative anyway.
        "vocab_size": int(meta.get("llama.vocab_size", len(tokens))),
        "rope_theta": float(meta.get("llama.rope.freq_base", 10000.0)),
        "max_position_embeddings": int(meta["llama.context_length"]),
        # convert_hf_to_gguf permutes the q/k rows so llama.cpp can use
        # interleaved ("traditional" in MLX) rotary embeddings.
        "rope_traditional": True,
        # No `output.weight` means the LM head reuses the token embedding.
        "tie_word_embeddings": "output.weight" not in tensors,
    }
    head_dim = meta.get("llama.attention.key_length")
    if head_dim is not None and int(head_dim) != hidden // heads:
        config["head_dim"] = int(head_dim)
    if meta.get("llama.rope.scaling.type") == "linear":
        config["rope_scaling"] = {
            "type": "linear",
            "factor": float(meta["llama.rope.scaling.factor"]),
        }
    for key in ("bos", "eos", "padding"):
        value = meta.get(f"tokenizer.ggml.{key}_token_id")
        if value is not None:
            config[f"{'pad' if key == 'padding' else key}_token_id"] = int(value)
    return config


# --- weights --------------------------------------------------------------


def _mlx_name(gguf_name: str) -> str:
    """Map e.g. `blk.3.attn_q.scales` to `model.layers.3.self_attn.q_proj.scales`."""
    base, _, suffix = gguf_name.rpartition(".")
    if suffix not in _SUFFIXES:
        raise ValueError(f"unexpected GGUF tensor name {gguf_name!r}")
    if base in _TOP_NAMES:
        return f"{_TOP_NAMES[base]}.{suffix}"
    match = _BLOCK_RE.match(base)
    if match and match.group(2) in _LAYER_NAMES:
        return f"model.layers.{match.group(1)}.{_LAYER_NAMES[match.group(2)]}.{suffix}"
    raise ValueError(f"unexpected GGUF tensor name {gguf_name!r}")


def _rename_tensors(tensors: dict[str, mx.array]) -> dict[str, mx.array]:
    """Rename GGUF tensors to mlx-lm llama parameter names.

    `rope_freqs` (precomputed rope factors some GGUFs carry) has no
    counterpart in mlx-lm and is dropped.
    """
    return {_mlx_name(k): v for k, v in tensors.items() if not k.startswith("rope_freqs")}


def _in_features(module: str, config: dict[str, Any]) -> int:
    """Unpacked input width of a module, known from the model dimensions."""
    if module.endswith("down_proj"):
        return config["intermediate_size"]
    if module.endswith("o_proj"):
        head_dim = config.get("head_dim", config["hidden_size"] // config["num_attention_heads"])
        return config["num_attention_heads"] * head_dim
    return config["hidden_size"]


def _quantized_modules(weights: dict[str, mx.array]) -> list[str]:
    """Module paths that carry a quantized (weight, scales, biases) triple."""
    return sorted(k[: -len(".scales")] for k in weights if k.endswith(".scales"))


def _quant_params(module: str, weights: dict[str, mx.array], config: dict[str, Any]) -> dict[str, int]:
    """Group size and bits of one quantized module, derived from tensor shapes.

    A row of `in` values packs into in*bits/32 uint32 words and has
    in/group_size scales, so both follow once `in` is known.
    """
    in_features = _in_features(module, config)
    packed = weights[f"{module}.weight"].shape[-1]
    groups = weights[f"{module}.scales"].shape[-1]
    group_size, rem_g = divmod(in_features, groups)
    bits, rem_b = divmod(packed * 32, in_features)
    if rem_g or rem_b:
        raise ValueError(f"cannot infer quantization of {module} from its shapes")
    return {"group_size": group_size, "bits": bits}


def _quantization_config(weights: dict[str, mx.array], config: dict[str, Any]) -> dict[str, Any]:
    """The `quantization` entry: the most common parameters, plus per-module
    overrides when a GGUF mixes types (e.g. Q8_0 embeddings in a Q4 file)."""
    params = {m: _quant_params(m, weights, config) for m in _quantized_modules(weights)}
    if not params:
        return {}
    common = Counter(tuple(p.items()) for p in params.values()).most_common(1)[0][0]
    quantization: dict[str, Any] = dict(common)
    quantization.update({m: p for m, p in params.items() if tuple(p.items()) != common})
    return quantization


def _dequantize_all(weights: dict[str, mx.array], config: dict[str, Any]) -> dict[str, mx.array]:
    """Replace every quantized triple with a float32 `.weight`; cast the rest to float32."""
    # Scales and biases are cast first, so scale * q + bias is computed in
    # float32 (as llama.cpp does); float16 arithmetic would round the weights.
    out = {k: v.astype(mx.float32) for k, v in weights.items() if v.dtype != mx.uint32}
    for module in _quantized_modules(weights):
        p = _quant_params(module, weights, config)
        dense = mx.dequantize(
            weights[f"{module}.weight"],
            out.pop(f"{module}.scales"),
            out.pop(f"{module}.biases"),
            group_size=p["group_size"],
            bits=p["bits"],
        )
        out[f"{module}.weight"] = dense.astype(mx.float32)
    return out
