"""`python -m routing.prepare`: export the embedding model's ONNX graph once, so routing workers start fast."""
from __future__ import annotations

import sys

from routing.embedder import embedding_model_path, keep_hub_offline, onnx_model_path
from settings import get_settings


def main() -> int:
    settings = get_settings()
    keep_hub_offline(settings)
    if settings.embedding_backend == "onnx":
        print("[embedding] preparing the ONNX graph (exported once, about 30 s the first time)", flush=True)
        path = onnx_model_path(embedding_model_path(settings.embedding_model), settings.models_path())
        print(f"[embedding] ready: {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
