"""Export the sentence-transformers model to one ONNX graph: token ids + mask -> unit-length embedding.

Imported only when the graph is missing (torch is heavy). The graph is checked against
sentence-transformers before it replaces anything.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from sentence_transformers import SentenceTransformer

CHECK_SENTENCES = ["hello there", "Prove that the square root of two is irrational, step by step please.",
                   "¿cómo invierto una cadena en python?"]
MIN_COSINE = 0.9999


class MeanPooled(torch.nn.Module):
    """The transformer, then the mean over real tokens, then unit length (what the model's
    sentence-transformers pipeline does)."""

    def __init__(self, transformer: torch.nn.Module) -> None:
        super().__init__()
        self.transformer = transformer

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(mean, dim=1)


def export(model_path: str, target: Path) -> None:
    """Write the graph to `target` atomically; ValueError if the model is not mean-pooled or the graph disagrees."""
    reference = SentenceTransformer(model_path, device="cpu")
    modules = [type(module).__name__ for module in reference]
    pooling = reference[1].get_config_dict().get("pooling_mode") if len(modules) > 1 else None
    if modules != ["Transformer", "Pooling", "Normalize"] or pooling != "mean":
        raise ValueError(f"{model_path} is not a mean-pooled, normalised model ({modules}); "
                         f"use EMBEDDING_BACKEND=torch")
    sample = reference.tokenizer(CHECK_SENTENCES, padding=True, return_tensors="pt")
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    # The tracer warns about shape checks it freezes (padding length, causal flag); they hold
    # for every input of this graph, and _check compares the result numerically anyway.
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(MeanPooled(reference[0].auto_model.eval()), (sample["input_ids"], sample["attention_mask"]),
                          str(tmp), input_names=["input_ids", "attention_mask"], output_names=["embedding"],
                          dynamic_axes={"input_ids": {0: "batch", 1: "tokens"},
                                        "attention_mask": {0: "batch", 1: "tokens"}, "embedding": {0: "batch"}},
                          opset_version=17, dynamo=False)
    try:
        _check(tmp, reference, model_path)
        os.replace(tmp, target)  # another process may be exporting the same model: last one wins, both valid
    finally:
        tmp.unlink(missing_ok=True)


def _check(graph_file: Path, reference: SentenceTransformer, model_path: str) -> None:
    from routing.embedder import OnnxEncoder

    got = OnnxEncoder(model_path, graph_file, threads=1).encode(CHECK_SENTENCES)
    want = reference.encode(CHECK_SENTENCES, normalize_embeddings=True, show_progress_bar=False)
    cosine = float((got * want).sum(axis=1).min())
    if cosine < MIN_COSINE:
        raise ValueError(f"ONNX export of {model_path} disagrees with sentence-transformers (cosine {cosine:.6f})")
