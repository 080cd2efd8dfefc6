"""Retrieval over a domain corpus for the retrieval-augmented (RAG) prompting regimen.

Documents are cut into overlapping word windows (`chunk_documents`), indexed by BM25
(Okapi, implemented here with numpy and dicts), by sentence embeddings
(`tunesmith.embeddings`), or by both fused with reciprocal-rank fusion (`Retriever`).
An index is built once and saved to a directory (chunks.jsonl, embeddings.npy, meta.json)
written atomically; `Retriever.load` refuses an index whose chunks do not match the hash
recorded at build time. `format_passages` renders hits for a prompt with their source ids,
and `recall_at_k` measures how often a question's gold document is retrieved.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from tunesmith.embeddings import cosine_topk, get_embedder
from tunesmith.errors import DataError, Problem, TunesmithError

SCHEMA_VERSION = 1
METHODS = ("bm25", "embedding", "hybrid")

# A deliberately small list: enough to stop question words ("what", "which", "the")
# from dominating BM25 scores; domain words must never be dropped.
STOPWORDS = frozenset(
    "a an and are as at be been by did do does for from had has have how i in is it its of on or "
    "that the their this to was were what when where which who whom whose why will with you your".split()
)
_TOKEN = re.compile(r"\w+")


@dataclass(frozen=True)
class Chunk:
    id: str          # "<doc_id>#<n>", n counting from 0 within the document
    doc_id: str
    text: str        # "<title>\n<window words>" (title only when the document has one)
    start_word: int  # index of the window's first word in the document's text.split()


def corpus_documents(rows: list[dict]) -> list[dict]:
    """Documents {"id", "title", "text"} from a text dataset's rows: the id is the row's id or
    source, else its position (doc-0000), so chunk ids stay stable for a given corpus file."""
    return [{"id": str(r.get("id") or r.get("source") or f"doc-{i:04d}"), "title": r.get("title", ""), "text": r["text"]}
            for i, r in enumerate(rows)]


def chunk_documents(docs: list[dict], *, chunk_words: int = 120, overlap_words: int = 30) -> list[Chunk]:
    """Cut each document into windows of `chunk_words` words, consecutive windows sharing
    `overlap_words`; the last window ends at the document's end, and a document no longer
    than `chunk_words` is one chunk. Documents with no words give no chunk."""
    if chunk_words < 1 or not 0 <= overlap_words < chunk_words:
        raise TunesmithError(
            f"chunking needs chunk_words >= 1 and 0 <= overlap_words < chunk_words, "
            f"got chunk_words={chunk_words}, overlap_words={overlap_words}")
    _check_docs(docs)
    step = chunk_words - overlap_words
    chunks: list[Chunk] = []
    for doc in docs:
        words = str(doc["text"]).split()
        title = str(doc.get("title") or "").strip()
        start, n = 0, 0
        while start < len(words):
            body = " ".join(words[start:start + chunk_words])
            text = f"{title}\n{body}" if title else body  # the title gives each window its topic
            chunks.append(Chunk(f"{doc['id']}#{n}", str(doc["id"]), text, start))
            if start + chunk_words >= len(words):
                break
            start, n = start + step, n + 1
    return chunks


def _check_docs(docs: list[dict]) -> None:
    """Every document needs an id (unique: chunk ids derive from it) and a text."""
    problems: list[Problem] = []
    seen: set[str] = set()
    for i, doc in enumerate(docs, start=1):
        if not isinstance(doc, dict) or not str(doc.get("id") or "").strip():
            problems.append(Problem("<documents>", i, "id", "missing document id", "give every document an id"))
            continue
        if not isinstance(doc.get("text"), str):
            problems.append(Problem("<documents>", i, "text", "missing or non-string text"))
        if str(doc["id"]) in seen:
            problems.append(Problem("<documents>", i, "id", f"duplicate document id {doc['id']!r}",
                                    "document ids must be unique"))
        seen.add(str(doc["id"]))
    if problems:
        raise DataError(problems)


def tokenize(text: str) -> list[str]:
    """Lowercased \\w+ tokens without stopwords."""
    return [t for t in _TOKEN.findall(text.lower()) if t not in STOPWORDS]


class BM25:
    """Okapi BM25 over a fixed list of texts.

    score(D, Q) = sum over query tokens q of idf(q) * tf(q,D) * (k1 + 1)
                  / (tf(q,D) + k1 * (1 - b + b * |D| / avgdl))
    with idf(q) = ln(1 + (N - n(q) + 0.5) / (n(q) + 0.5)): the "+1" (as in Lucene) keeps
    idf positive for terms found in more than half the documents, which the classic
    formula would turn negative on small corpora. A repeated query token counts each time.
    """

    def __init__(self, texts: list[str], k1: float = 1.5, b: float = 0.75):
        self.k1, self.b = float(k1), float(b)
        docs = [tokenize(t) for t in texts]
        self.n_docs = len(docs)
        self.doc_len = np.array([len(d) for d in docs], dtype=np.float64)  # (N,)
        self.avgdl = float(self.doc_len.mean()) if docs else 0.0
        # Postings: term -> (doc indices (P,), term frequencies (P,)); a sparse term-document matrix.
        postings: dict[str, dict[int, int]] = {}
        for i, toks in enumerate(docs):
            for t in toks:
                row = postings.setdefault(t, {})
                row[i] = row.get(i, 0) + 1
        self.postings = {t: (np.fromiter(r.keys(), np.int64, len(r)), np.fromiter(r.values(), np.float64, len(r)))
                         for t, r in postings.items()}
        # Per-document length normalisation k1 * (1 - b + b*|D|/avgdl), (N,); an all-empty corpus has avgdl 0.
        self._norm = self.k1 * (1 - self.b + self.b * self.doc_len / max(self.avgdl, 1e-12))

    def idf(self, term: str) -> float:
        n = len(self.postings[term][0]) if term in self.postings else 0
        return math.log(1 + (self.n_docs - n + 0.5) / (n + 0.5))

    def scores(self, query: str) -> np.ndarray:
        """(N,) float64 BM25 score of every text for `query`; 0 where no query term occurs."""
        out = np.zeros(self.n_docs, dtype=np.float64)
        for term in tokenize(query):
            if term not in self.postings:
                continue
            idx, tf = self.postings[term]
            out[idx] += self.idf(term) * tf * (self.k1 + 1) / (tf + self._norm[idx])
        return out


def reciprocal_rank_fusion(rankings: Iterable[np.ndarray], n: int, rrf_k: int = 60) -> np.ndarray:
    """(n,) fused scores: sum over rankings of 1 / (rrf_k + rank), rank counting from 1.

    Each ranking is an array of item indices, best first; it may list only some items
    (an item a ranking leaves out gets nothing from it)."""
    fused = np.zeros(n, dtype=np.float64)
    for ranking in rankings:
        ranking = np.asarray(ranking, dtype=np.int64)
        fused[ranking] += 1.0 / (rrf_k + np.arange(1, len(ranking) + 1))
    return fused


def _model_name(embedder) -> str:
    model_dir = getattr(embedder, "model_dir", None)
    return "/".join(Path(model_dir).parts[-2:]) if model_dir else type(embedder).__name__


def _chunks_hash(chunks: list[Chunk]) -> str:
    """sha256 over every chunk's id and text, so a changed or reordered index is detected."""
    h = hashlib.sha256()
    for c in chunks:
        h.update(c.id.encode("utf-8") + b"\0" + c.text.encode("utf-8") + b"\0")
    return h.hexdigest()


class Retriever:
    """Top-k chunks for queries by BM25, embedding cosine, or both fused ("hybrid")."""

    def __init__(self, chunks: list[Chunk], *, method: str = "hybrid", rrf_k: int = 60, embedder=None,
                 k1: float = 1.5, b: float = 0.75, _embeddings: np.ndarray | None = None,
                 _embedding_model: str | None = None):
        if method not in METHODS:
            raise TunesmithError(f"retrieval method must be one of {', '.join(METHODS)}, got {method!r}")
        if not chunks:
            raise TunesmithError("retrieval needs at least one chunk: the corpus is empty")
        if rrf_k < 0:
            raise TunesmithError(f"rrf_k must be >= 0, got {rrf_k}")
        self.chunks = list(chunks)
        self.method, self.rrf_k, self.k1, self.b = method, int(rrf_k), float(k1), float(b)
        self._embedder = embedder  # resolved lazily: a loaded bm25 index never loads the model
        texts = [c.text for c in self.chunks]
        self.bm25 = BM25(texts, k1=k1, b=b) if method in ("bm25", "hybrid") else None
        self.embeddings: np.ndarray | None = None  # (M, dim) float32, L2-normalised rows
        self.embedding_model: str | None = None  # recorded in meta.json, for the record only
        if method in ("embedding", "hybrid"):
            emb = _embeddings if _embeddings is not None else self.embedder.encode(texts)
            self.embedding_model = _embedding_model or _model_name(self.embedder)
            self.embeddings = np.asarray(emb, dtype=np.float32)
            if self.embeddings.ndim != 2 or self.embeddings.shape[0] != len(self.chunks):
                raise TunesmithError(f"embeddings have shape {self.embeddings.shape}, "
                                     f"expected ({len(self.chunks)}, dim): rebuild the index")

    @property
    def embedder(self):
        if self._embedder is None:
            self._embedder = get_embedder()
        return self._embedder

    def _rankings(self, queries: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query, (indices (M,), scores (M,)) of every chunk, best first. Equal scores keep
        chunk order (hybrid: the embedding's order), so results are deterministic."""
        m = len(self.chunks)
        dense_idx = dense_sc = None
        if self.embeddings is not None:
            q = np.asarray(self.embedder.encode(list(queries)), dtype=np.float32)  # (Q, dim)
            dense_idx, dense_sc = cosine_topk(q, self.embeddings, m)  # (Q, M) each
        out: list[tuple[np.ndarray, np.ndarray]] = []
        for i, query in enumerate(queries):
            if self.method == "embedding":
                out.append((dense_idx[i], dense_sc[i].astype(np.float64)))
                continue
            sparse = self.bm25.scores(query)  # (M,)
            order = np.argsort(-sparse, kind="stable")
            if self.method == "bm25":
                out.append((order, sparse[order]))
                continue
            # Hybrid: a chunk sharing no term with the query has no BM25 evidence, so it
            # gets no BM25 rank (its tie order would be arbitrary), only its dense rank.
            matched = order[sparse[order] > 0]
            fused = reciprocal_rank_fusion([matched, dense_idx[i]], m, self.rrf_k)  # (M,)
            # Two chunks that swap places between the rankings tie exactly (often an entity's
            # two documents); chunk order would always favour the earlier document, so ties
            # go to the embedding's order, the one that copes with paraphrased questions.
            dense_rank = np.empty(m, dtype=np.int64)
            dense_rank[dense_idx[i]] = np.arange(m)  # (M,): position of each chunk in dense order
            order = np.lexsort((dense_rank, -fused))  # primary key last: fused score, descending
            out.append((order, fused[order]))
        return out

    def search(self, queries: list[str], k: int = 3) -> list[list[tuple[Chunk, float]]]:
        """For each query, its top min(k, #chunks) chunks with their scores, best first.

        Scores are BM25 scores, cosine similarities or fused RRF scores by method."""
        if isinstance(queries, str):
            raise TunesmithError("Retriever.search takes a list of queries, not a single string")
        if k < 1:
            raise TunesmithError(f"k must be >= 1, got {k}")
        if not queries:
            return []
        return [[(self.chunks[j], float(s)) for j, s in zip(idx[:k], sc[:k])]
                for idx, sc in self._rankings(list(queries))]

    def _meta(self) -> dict:
        meta = {"schema_version": SCHEMA_VERSION, "method": self.method,
                "params": {"rrf_k": self.rrf_k, "k1": self.k1, "b": self.b},
                "n_chunks": len(self.chunks), "chunks_sha256": _chunks_hash(self.chunks)}
        if self.embeddings is not None:
            meta["embedding"] = {"dim": int(self.embeddings.shape[1]), "model": self.embedding_model}
        return meta

    def save(self, path: Path) -> Path:
        """Write the index to directory `path`, replacing any previous one.

        Files go to a temporary sibling directory renamed into place, so a crash leaves
        either the old index or the new one, never a mix."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        try:
            with open(tmp / "chunks.jsonl", "w", encoding="utf-8", newline="\n") as f:
                f.writelines(json.dumps(asdict(c), ensure_ascii=False) + "\n" for c in self.chunks)
            if self.embeddings is not None:
                np.save(tmp / "embeddings.npy", self.embeddings)
            (tmp / "meta.json").write_text(json.dumps(self._meta(), indent=2) + "\n", encoding="utf-8")
            old = None
            if path.exists():  # os.replace cannot overwrite a non-empty directory: move it aside
                old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
                os.replace(path, old / "index")
            os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return path

    @classmethod
    def load(cls, path: Path, embedder=None) -> "Retriever":
        """Read an index written by `save`; refuses a wrong schema or chunks not matching the hash."""
        path = Path(path)
        try:
            meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
            lines = (path / "chunks.jsonl").read_text(encoding="utf-8").splitlines()
            chunks = [Chunk(**json.loads(line)) for line in lines if line.strip()]
        except (OSError, ValueError, TypeError) as e:
            raise TunesmithError(f"{path}: not a readable retrieval index ({e}); rebuild it") from None
        if meta.get("schema_version") != SCHEMA_VERSION:
            raise TunesmithError(f"{path}: index schema_version {meta.get('schema_version')!r}, this tunesmith "
                                 f"reads {SCHEMA_VERSION}: rebuild the index")
        if _chunks_hash(chunks) != meta.get("chunks_sha256"):
            raise TunesmithError(f"{path}: chunks.jsonl does not match the hash in meta.json "
                                 "(edited or partly written): rebuild the index")
        emb = None
        if meta.get("method") in ("embedding", "hybrid"):
            try:
                emb = np.load(path / "embeddings.npy")
            except (OSError, ValueError) as e:
                raise TunesmithError(f"{path}: cannot read embeddings.npy ({e}); rebuild the index") from None
        p = meta.get("params", {})
        return cls(chunks, method=str(meta.get("method")), rrf_k=p.get("rrf_k", 60), k1=p.get("k1", 1.5),
                   b=p.get("b", 0.75), embedder=embedder, _embeddings=emb,
                   _embedding_model=(meta.get("embedding") or {}).get("model"))


def format_passages(hits: list[tuple[Chunk, float]]) -> str:
    """One "[<chunk id>] <text>" block per hit, blank-line separated, for a prompt that
    should be able to cite its sources."""
    return "\n\n".join(f"[{chunk.id}] {chunk.text}" for chunk, _ in hits)


def recall_at_k(retriever: Retriever, questions: list[str], gold_doc_ids: list[str],
                ks: Iterable[int] = (1, 3, 5)) -> dict:
    """{"recall@k": share of questions whose gold document is among the top-k chunks'
    documents, for each k} plus "n_questions"."""
    ks = sorted({int(k) for k in ks})
    if len(questions) != len(gold_doc_ids):
        raise TunesmithError(f"recall_at_k: {len(questions)} questions but {len(gold_doc_ids)} gold document ids")
    if not questions or not ks or ks[0] < 1:
        raise TunesmithError("recall_at_k needs at least one question and ks >= 1")
    results = retriever.search(list(questions), k=ks[-1])
    out: dict = {}
    for k in ks:
        hits = sum(gold in {c.doc_id for c, _ in res[:k]} for res, gold in zip(results, gold_doc_ids))
        out[f"recall@{k}"] = hits / len(questions)
    out["n_questions"] = len(questions)
    return out
