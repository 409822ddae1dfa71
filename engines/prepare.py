"""`python -m engines.prepare`: convert the tiers' models (and export the embedding graph) once, so workers start fast."""
from __future__ import annotations

import os
import sys

from engines.models import TIERS, resolve_model
from engines.provider import backend_name


def main() -> int:
    # The MLX folders are made whatever the backend: they hold the tokenizer, and mlx_lm.server
    # (make bench) and ENGINE_BACKEND=mlx load them.
    for tier in TIERS:
        spec = resolve_model(tier, progress=lambda line: print(f"[{tier}] {line}", flush=True))
        print(f"[{tier}] ready: {spec.model_id} at {spec.load_path}", flush=True)
    if backend_name() == "llamacpp":
        from engines.llamacpp_models import resolve_gguf

        for tier in TIERS:
            print(f"[{tier}] ready for llama.cpp: {resolve_gguf(tier).path}", flush=True)
    if os.environ.get("EMBEDDING_BACKEND", "onnx") == "onnx":
        from routing.embedder import embedding_model_path, onnx_model_path

        print("[embedding] preparing the ONNX graph (exported once, about 30 s the first time)", flush=True)
        print(f"[embedding] ready: {onnx_model_path(embedding_model_path())}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
