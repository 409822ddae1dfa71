"""The tokenizer a GGUF file carries, rebuilt as a Hugging Face tokenizer folder without MLX.

A GGUF file's metadata holds the tokenizer tables (tokens, merges, token types,
special token ids) and the chat template. `read_metadata` reads that metadata
(the header only, no tensor data) with a small reader of its own, and
`build_tokenizer_folder` writes `tokenizer.json` + `tokenizer_config.json`
from it: what the llama.cpp engine and the web app load with
`tokenizers`/`transformers`. engines.gguf (the MLX converter) writes the same
two files into its MLX folders with the functions here, so both backends
tokenize alike.
"""
from __future__ import annotations

import json
import shutil
import struct
import tempfile
import time
from pathlib import Path
from typing import Any, BinaryIO, Callable

# GGUF token_type values (llama.cpp's llama_token_type).
TOKEN_TYPE_CONTROL = 3
TOKEN_TYPE_USER_DEFINED = 4

GGUF_MAGIC = b"GGUF"
# Versions 2 and 3 share the metadata layout (64-bit counts and lengths); version 1 used 32-bit ones.
GGUF_VERSIONS = (2, 3)
# GGUF metadata value types with a fixed size -> struct format (little-endian files).
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


# --- metadata -------------------------------------------------------------


def read_metadata(path: Path) -> dict[str, Any]:
    """The key/value metadata of the GGUF file at `path`, as plain Python values (arrays as lists)."""
    with open(path, "rb") as file:
        if file.read(4) != GGUF_MAGIC:
            raise ValueError(f"{path} is not a GGUF file")
        version = _unpack(file, "I")
        if version not in GGUF_VERSIONS:
            raise ValueError(f"{path}: GGUF version {version} is not supported (only {GGUF_VERSIONS})")
        _unpack(file, "Q")  # tensor count: the tensors are not read
        count = _unpack(file, "Q")
        meta: dict[str, Any] = {}
        for _ in range(count):
            key = _read_string(file)
            meta[key] = _read_value(file, _unpack(file, "I"))
        return meta


def _unpack(file: BinaryIO, fmt: str) -> Any:
    """One value of struct type `fmt`."""
    return _unpack_array(file, fmt, 1)[0]


def _unpack_array(file: BinaryIO, fmt: str, count: int) -> list[Any]:
    """`count` values of struct type `fmt`, in one read (token types: tens of thousands)."""
    layout = f"<{count}{fmt}"
    return list(struct.unpack(layout, _read_exact(file, struct.calcsize(layout))))


def _read_string(file: BinaryIO) -> str:
    return _read_exact(file, _unpack(file, "Q")).decode("utf-8")


def _read_exact(file: BinaryIO, size: int) -> bytes:
    data = file.read(size)
    if len(data) < size:
        raise ValueError(f"GGUF metadata ends early in {getattr(file, 'name', 'the file')}")
    return data


def _read_value(file: BinaryIO, kind: int) -> Any:
    if kind in _SCALARS:
        return _unpack(file, _SCALARS[kind])
    if kind == _STRING:
        return _read_string(file)
    if kind == _ARRAY:
        item_kind, length = _unpack(file, "I"), _unpack(file, "Q")
        if item_kind in _SCALARS:
            return _unpack_array(file, _SCALARS[item_kind], length)
        return [_read_value(file, item_kind) for _ in range(length)]
    raise ValueError(f"unknown GGUF metadata value type {kind}")


# --- tokenizer ------------------------------------------------------------


def build_tokenizer(meta: dict[str, Any]) -> "Tokenizer":  # noqa: F821
    """Rebuild a byte-level BPE `tokenizers.Tokenizer` from GGUF metadata."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    if meta.get("tokenizer.ggml.model") != "gpt2":
        raise ValueError(
            f"unsupported GGUF tokenizer {meta.get('tokenizer.ggml.model')!r}: only byte-level BPE ('gpt2')"
        )
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if meta.get("tokenizer.ggml.pre") == "smollm":
        # SmolLM's tokenizer splits numbers into single digits before BPE.
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), byte_level]
        )
    else:
        tokenizer.pre_tokenizer = byte_level
    tokenizer.decoder = decoders.ByteLevel()

    types = meta.get("tokenizer.ggml.token_type") or []
    # Control tokens must not be split by BPE and are skipped when decoding
    # with skip_special_tokens; user-defined ones are only kept whole.
    special = [AddedToken(tokens[i], special=True, normalized=False)
               for i, t in enumerate(types) if t == TOKEN_TYPE_CONTROL]
    user = [AddedToken(tokens[i], special=False, normalized=False)
            for i, t in enumerate(types) if t == TOKEN_TYPE_USER_DEFINED]
    tokenizer.add_special_tokens(special)
    if user:
        tokenizer.add_tokens(user)
    return tokenizer


def tokenizer_config(meta: dict[str, Any]) -> dict[str, Any]:
    """`tokenizer_config.json` for transformers' PreTrainedTokenizerFast."""
    tokens = meta["tokenizer.ggml.tokens"]
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": bool(meta.get("tokenizer.ggml.add_eos_token", False)),
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(meta.get("llama.context_length", 2048)),
    }
    for key, name in (("bos", "bos_token"), ("eos", "eos_token"),
                      ("padding", "pad_token"), ("unknown", "unk_token")):
        token_id = meta.get(f"tokenizer.ggml.{key}_token_id")
        if token_id is not None:
            config[name] = tokens[int(token_id)]
    if "tokenizer.chat_template" in meta:
        config["chat_template"] = meta["tokenizer.chat_template"]
    return config


def write_tokenizer(meta: dict[str, Any], folder: Path) -> None:
    """Write `tokenizer.json` and `tokenizer_config.json` into `folder`."""
    build_tokenizer(meta).save(str(folder / "tokenizer.json"))
    write_json(folder / "tokenizer_config.json", tokenizer_config(meta))


def build_tokenizer_folder(gguf: Path, target: Path, progress: Callable[[str], None] = print) -> Path:
    """Write the tokenizer folder of `gguf` at `target` unless one is there already; return `target`.

    The folder is written beside `target` and renamed into place, so a folder
    at `target` is always complete. When another process finishes first, its
    folder (the same files: both read the same GGUF) is kept and ours dropped.
    """
    progress(f"writing the tokenizer of {gguf} -> {target}")
    meta = read_metadata(gguf)
    tmp = partial_dir(target)
    try:
        write_tokenizer(meta, tmp)
        try:
            tmp.rename(target)
        except OSError:  # renaming onto a non-empty folder fails: someone else built it
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already when the rename succeeded
    return target


# --- files ----------------------------------------------------------------


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def partial_dir(target: Path) -> Path:
    """A new empty folder beside `target`, to build it in before renaming it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it 0700; the result is an ordinary folder
    return tmp


def replace_dir(src: Path, dst: Path) -> None:
    """Move the finished `src` folder to `dst`, replacing any old `dst`.

    The old folder is renamed aside first (renaming onto a non-empty
    directory fails), so `dst` is either the old or the new complete folder.
    """
    if not dst.exists():
        src.rename(dst)
        return
    old = dst.with_name(f".{dst.name}.old-{time.time_ns()}")
    dst.rename(old)
    src.rename(dst)
    shutil.rmtree(old, ignore_errors=True)
