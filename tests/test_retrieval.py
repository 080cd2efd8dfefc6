"""Tests for tunesmith.retrieval: chunking, BM25 arithmetic, rank fusion, index save/load,
and retrieval quality on the demo domain.

All but the last test use a tiny deterministic stand-in for the embedding model, so they run
in well under a second; the demo-domain recall test loads the real all-MiniLM-L6-v2 once.
"""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest

from tunesmith.errors import DataError, TunesmithError
from tunesmith.retrieval import (
    BM25,
    Chunk,
    Retriever,
    chunk_documents,
    format_passages,
    recall_at_k,
    reciprocal_rank_fusion,
    tokenize,
)


class HashEmbedder:
    """Bag of words hashed into 64 buckets, L2-normalised: deterministic and instant."""

    dim = 64

    def __init__(self) -> None:
        self.calls = 0

    def encode(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(texts), self.dim), dtype=np.float32)  # (N, 64)
        for i, t in enumerate(texts):
            for tok in tokenize(t):
                out[i, zlib.crc32(tok.encode()) % self.dim] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


class TableEmbedder:
    """Fixed vectors per text, to dictate the embedding ranking in a worked example."""

    def __init__(self, table: dict[str, list[float]]) -> None:
        self.table = table

    def encode(self, texts: list[str]) -> np.ndarray:
        v = np.array([self.table[t] for t in texts], dtype=np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


# ------------------------------------------------------------------------------ chunking

def test_chunking_windows_overlap_ids_by_hand():
    text = " ".join(f"w{i}" for i in range(10))
    chunks = chunk_documents([{"id": "d", "text": text}], chunk_words=4, overlap_words=2)
    # step = 4 - 2 = 2: windows start at 0, 2, 4, 6; the one at 6 reaches w9, so it is the last.
    assert [c.id for c in chunks] == ["d#0", "d#1", "d#2", "d#3"]
    assert [c.start_word for c in chunks] == [0, 2, 4, 6]
    assert [c.text for c in chunks] == ["w0 w1 w2 w3", "w2 w3 w4 w5", "w4 w5 w6 w7", "w6 w7 w8 w9"]
    assert {c.doc_id for c in chunks} == {"d"}


def test_chunking_last_window_is_short_and_title_prepended():
    text = " ".join(f"w{i}" for i in range(7))
    chunks = chunk_documents([{"id": "d", "title": "Title", "text": text}], chunk_words=4, overlap_words=1)
    # step 3: windows at 0 (w0-w3) and 3 (w3-w6, reaching the end).
    assert [c.text for c in chunks] == ["Title\nw0 w1 w2 w3", "Title\nw3 w4 w5 w6"]


def test_short_and_empty_documents():
    docs = [{"id": "a", "title": "T", "text": "only three words"},
            {"id": "b", "text": "   "},
            {"id": "c", "text": "exactly four words here"}]
    chunks = chunk_documents(docs, chunk_words=4, overlap_words=1)
    assert [(c.id, c.start_word, c.text) for c in chunks] == [
        ("a#0", 0, "T\nonly three words"), ("c#0", 0, "exactly four words here")]


def test_chunking_rejects_bad_arguments():
    with pytest.raises(TunesmithError):
        chunk_documents([{"id": "a", "text": "x"}], chunk_words=4, overlap_words=4)
    with pytest.raises(DataError) as err:
        chunk_documents([{"id": "a", "text": "x"}, {"id": "a", "text": "y"}, {"text": "z"}])
    assert len(err.value.problems) == 2


# ---------------------------------------------------------------------------------- BM25

def test_bm25_matches_hand_computation():
    bm = BM25(["the cat sat on the mat", "the dog sat", "cat cat dog"])
    # Tokens without stopwords ("the", "on"): d0 = cat sat mat (3), d1 = dog sat (2),
    # d2 = cat cat dog (3); N = 3, avgdl = 8/3.
    # idf(cat) = idf(dog) = ln(1 + (3 - 2 + 0.5) / (2 + 0.5)) = ln(1.6) = 0.4700036
    # norm(|D|=3) = 1.5 * (0.25 + 0.75 * 3 / (8/3)) = 1.5 * 1.09375 = 1.640625
    # norm(|D|=2) = 1.5 * (0.25 + 0.75 * 2 / (8/3)) = 1.5 * 0.8125  = 1.21875
    # d0: cat tf=1 -> 0.4700036 * 1 * 2.5 / (1 + 1.640625) = 0.4700036 * 0.9467456 = 0.4449739
    # d1: dog tf=1 -> 0.4700036 * 2.5 / (1 + 1.21875)    = 0.4700036 * 1.1267606 = 0.5295815
    # d2: cat tf=2 -> 0.4700036 * 2 * 2.5 / (2 + 1.640625) = 0.4700036 * 1.3733906 = 0.6454986
    #     dog tf=1 -> 0.4449739 (as d0's cat);   total 1.0904725
    assert bm.scores("cat dog") == pytest.approx([0.4449739, 0.5295815, 1.0904725], abs=1e-6)
    assert bm.scores("Cat?") == pytest.approx([0.4449739, 0.0, 0.6454986], abs=1e-6)
    assert bm.scores("the unknown") == pytest.approx([0.0, 0.0, 0.0])


def test_bm25_idf_stays_positive_for_common_terms():
    bm = BM25(["sat", "sat", "sat mat"])
    assert bm.idf("sat") == pytest.approx(np.log(1 + 0.5 / 3.5))  # in all 3 docs, still > 0
    assert (bm.scores("sat") > 0).all()


# ------------------------------------------------------------------------ fusion (RRF)

def test_rrf_fusion_by_hand():
    # Query "red fox"; "red" is in all three chunks, "fox" only in A and B.
    a = Chunk("A#0", "A", "red fox", 0)
    b = Chunk("B#0", "B", "red fox jumps over fences", 0)
    c = Chunk("C#0", "C", "red bird", 0)
    emb = TableEmbedder({"red fox": [0, 0, 1], "red fox jumps over fences": [0.9, 0.1, 0],
                         "red bird": [0.5, 0.5, 0], "red fox?": [1, 0, 0]})
    # BM25 ranks A (short, both terms) > B (both terms, longer) > C (only "red").
    assert list(Retriever([a, b, c], method="bm25").search(["red fox?"], k=3)[0][i][0].id
                for i in range(3)) == ["A#0", "B#0", "C#0"]
    # Cosines to [1, 0, 0]: B 0.994, C 0.707, A 0 -> embedding ranks B > C > A.
    dense = Retriever([a, b, c], method="embedding", embedder=emb).search(["red fox?"], k=3)[0]
    assert [h[0].id for h in dense] == ["B#0", "C#0", "A#0"]
    # RRF with rrf_k = 1: score = 1/(1 + bm25 rank) + 1/(1 + dense rank)
    #   A: 1/2 + 1/4 = 0.75    B: 1/3 + 1/2 = 0.8333    C: 1/4 + 1/3 = 0.5833  -> B > A > C
    hybrid = Retriever([a, b, c], method="hybrid", rrf_k=1, embedder=emb).search(["red fox?"], k=3)[0]
    assert [h[0].id for h in hybrid] == ["B#0", "A#0", "C#0"]
    assert [h[1] for h in hybrid] == pytest.approx([5 / 6, 3 / 4, 7 / 12])


def test_rrf_tie_goes_to_embedding_order():
    x = Chunk("X#0", "X", "red fox", 0)
    y = Chunk("Y#0", "Y", "red fox jumps", 0)
    emb = TableEmbedder({"red fox": [0, 1], "red fox jumps": [1, 0], "red fox?": [1, 0.1]})
    # BM25: X (shorter) > Y; embedding: Y > X. RRF (rrf_k=1): X = 1/2 + 1/3 = Y -> tie;
    # chunk order would pick X, the embedding's order picks Y.
    hits = Retriever([x, y], method="hybrid", rrf_k=1, embedder=emb).search(["red fox?"], k=2)[0]
    assert [h[0].id for h in hits] == ["Y#0", "X#0"]
    assert hits[0][1] == pytest.approx(hits[1][1])


def test_rrf_skips_items_a_ranking_leaves_out():
    fused = reciprocal_rank_fusion([np.array([2]), np.array([0, 1, 2])], n=3, rrf_k=0)
    assert fused == pytest.approx([1.0, 0.5, 1.0 + 1 / 3])  # item 2: 1/1 + 1/3


# ----------------------------------------------------------------------- index on disk

def _toy_docs() -> list[dict]:
    return [{"id": f"doc-{i:03d}", "title": f"Note {i}",
             "text": f"item {i} colour {c} made in {t} by {p} " * 3}
            for i, (c, t, p) in enumerate([("red", "Oslo", "Ann"), ("blue", "Rome", "Bob"),
                                           ("green", "Lima", "Cy"), ("grey", "Kiev", "Di")])]


@pytest.mark.parametrize("method", ["bm25", "embedding", "hybrid"])
def test_save_load_round_trip(tmp_path, method):
    chunks = chunk_documents(_toy_docs(), chunk_words=8, overlap_words=2)
    emb = HashEmbedder()
    built = Retriever(chunks, method=method, rrf_k=10, embedder=emb)
    queries = ["what is made in Rome?", "who made the green item", "grey Kiev"]
    before = built.search(queries, k=4)
    built.save(tmp_path / "index")
    built.save(tmp_path / "index")  # replacing an existing index works too
    names = sorted(p.name for p in (tmp_path / "index").iterdir())
    assert names == (["chunks.jsonl", "meta.json"] if method == "bm25"
                     else ["chunks.jsonl", "embeddings.npy", "meta.json"])
    assert [p.name for p in tmp_path.iterdir()] == ["index"]  # no temp leftovers
    calls = emb.calls
    loaded = Retriever.load(tmp_path / "index", embedder=emb)
    assert emb.calls == calls  # chunk embeddings come from disk, not re-encoded
    assert (loaded.method, loaded.rrf_k) == (method, 10)
    after = loaded.search(queries, k=4)
    assert [[(c, pytest.approx(s)) for c, s in r] for r in before] == after


def test_load_rejects_tampered_or_newer_index(tmp_path):
    Retriever(chunk_documents(_toy_docs()), method="bm25").save(tmp_path / "ix")
    lines = (tmp_path / "ix" / "chunks.jsonl").read_text().splitlines()
    row = json.loads(lines[0])
    row["text"] += " edited"
    (tmp_path / "ix" / "chunks.jsonl").write_text("\n".join([json.dumps(row)] + lines[1:]) + "\n")
    with pytest.raises(TunesmithError, match="hash"):
        Retriever.load(tmp_path / "ix")
    Retriever(chunk_documents(_toy_docs()), method="bm25").save(tmp_path / "ix")
    meta = json.loads((tmp_path / "ix" / "meta.json").read_text())
    meta["schema_version"] = 99
    (tmp_path / "ix" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(TunesmithError, match="schema_version"):
        Retriever.load(tmp_path / "ix")
    with pytest.raises(TunesmithError, match="not a readable"):
        Retriever.load(tmp_path / "missing")


# ------------------------------------------------------------------ prompts and recall

def test_format_passages_and_recall_on_toy():
    r = Retriever(chunk_documents(_toy_docs()), method="bm25")
    hits = r.search(["colour green"], k=2)[0]
    text = format_passages(hits)
    assert text.startswith("[doc-002#0] Note 2\nitem 2 colour green")
    assert text.count("\n\n[") == 1
    rec = recall_at_k(r, ["green Lima", "Rome", "Oslo Ann"], ["doc-002", "doc-001", "doc-003"], ks=(1, 3))
    assert rec == {"recall@1": pytest.approx(2 / 3), "recall@3": pytest.approx(2 / 3), "n_questions": 3}
    with pytest.raises(TunesmithError):
        r.search("a single string")
    with pytest.raises(TunesmithError):
        Retriever(chunk_documents(_toy_docs()), method="dense")


@pytest.fixture(scope="module")
def demo():
    from tunesmith.demo.domain import build_domain

    d = build_domain(seed=0)
    return (chunk_documents(d.corpus), [q["prompt"] for q in d.qa_test], [q["doc_id"] for q in d.qa_test])


def test_demo_bm25_recall(demo):
    chunks, questions, gold = demo
    rec = recall_at_k(Retriever(chunks, method="bm25"), questions, gold)
    assert rec["recall@3"] >= 0.8


class _Memo:
    """Encode each distinct text once: the embedding and hybrid indexes share the work."""

    def __init__(self, inner) -> None:
        self.inner, self.cache = inner, {}

    def encode(self, texts: list[str]) -> np.ndarray:
        todo = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if todo:
            self.cache.update(zip(todo, self.inner.encode(todo)))
        return np.stack([self.cache[t] for t in texts])


@pytest.mark.slow
def test_demo_recall_with_real_embedder(demo):
    from tunesmith.embeddings import embedding_model_dir, get_embedder

    try:
        embedding_model_dir()
    except TunesmithError as e:
        pytest.skip(str(e))
    chunks, questions, gold = demo
    emb = _Memo(get_embedder())
    emb.encode([c.text for c in chunks] + questions)  # one batch call for everything
    recalls = {m: recall_at_k(Retriever(chunks, method=m, embedder=emb), questions, gold)
               for m in ("bm25", "embedding", "hybrid")}
    print(recalls)
    assert recalls["hybrid"]["recall@3"] >= 0.8
    assert recalls["embedding"]["recall@3"] >= 0.8
