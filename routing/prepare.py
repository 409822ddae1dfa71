"""`python -m routing.prepare`: export the embedding model's ONNX graphs once, so routing workers start fast."""
from __future__ import annotations

import sys

from routing.embedder import embedding_model_path, int8_model_path, keep_hub_offline, onnx_model_path
from settings import get_settings

GRAPHS = {"onnx": onnx_model_path, "onnx-int8": int8_model_path}


def main() -> int:
    settings = get_settings()
    keep_hub_offline(settings)
    model = embedding_model_path(settings.embedding_model)
    # The API's backend and the router's (EMBEDDING_BACKEND, ROUTING_EMBEDDING_BACKEND); torch needs no graph.
    for backend in dict.fromkeys((settings.embedding_backend.strip(), settings.routing_embedding_backend.strip())):
        if backend in GRAPHS:
            print(f"[embedding] preparing the {backend} graph (exported once, about 30 s the first time)", flush=True)
            print(f"[embedding] ready: {GRAPHS[backend](model, settings.models_path())}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
