"""Domain adherence: does an answer stay inside the user's domain, and are off-domain questions declined?

The primary figure is content grounding (tunesmith.eval.grounding): what an answer asserts must
be supported by the domain passages retrieved for its question. This module adds the secondary
topic score, decline detection for the out-of-domain policy, and `adherence_report`, which
combines them into the numbers the evaluation reports.

The topic score is an embedding classifier built from the domain corpus (no LLM judge):

* the domain documents are cut into sentence-aligned chunks of about `chunk_words` words and
  embedded with all-MiniLM-L6-v2 (tunesmith.embeddings);
* score(text) = cosine similarity to the nearest reference chunk (kNN with k=1). k=1 rather
  than a top-3 mean because a domain fact is usually stated in one place only: an answer about
  it matches one chunk strongly and the next chunks are about other things, so averaging them
  dilutes exactly the evidence we want (on the demo domain the lowest reference-answer score
  drops from 0.45 to 0.37 with top-3 while general text barely moves);
* a seeded ~25% of the chunks is held out of the reference set; the held-out chunks and their
  sentences are the in-domain calibration units, the caller's general texts and their sentences
  the out-of-domain ones. Sentences are included because answers are usually a sentence or two
  and a short text scores lower than a paragraph: a threshold fitted on paragraphs alone would
  reject short on-domain answers. All general texts are used (none is held back), since they
  take no part in the score itself and every one of them makes the threshold less noisy;
* the threshold maximises balanced accuracy (Youden's J) on those units.

`is_decline` spots refusals / "I don't know" answers; `adherence_report` combines both into the
numbers the evaluation reports.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.atomic import write_atomic
from tunesmith.embeddings import EMBEDDING_PACKAGE, cosine_topk, get_embedder
from tunesmith.errors import TunesmithError

FORMAT_VERSION = 1
HOLDOUT_SHARE = 0.25
MIN_SENTENCE_WORDS = 4  # shorter sentences ("Yes.", headings) carry no topic signal for calibration
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+")


# --------------------------------------------------------------------------- text units

def split_sentences(text: str) -> list[str]:
    """Sentences of `text`, split after . ! ? followed by whitespace (good enough for prose)."""
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def chunk_text(text: str, chunk_words: int = 80) -> list[str]:
    """Sentence-aligned chunks of about `chunk_words` words, of even size within one text.

    A 107-word document gives two ~53-word chunks rather than 80 + 27: a tiny tail chunk would
    be a poor reference. Sentences longer than `chunk_words` are cut at word boundaries.
    """
    if chunk_words < 1:
        raise TunesmithError(f"chunk_words must be >= 1, got {chunk_words}")
    pieces: list[list[str]] = []  # word lists, each at most chunk_words long
    for sent in split_sentences(text):
        words = sent.split()
        pieces.extend(words[i : i + chunk_words] for i in range(0, len(words), chunk_words))
    total = sum(len(p) for p in pieces)
    if total == 0:
        return []
    n_chunks = -(-total // chunk_words)  # ceil
    target = total / n_chunks
    chunks: list[list[str]] = [[] for _ in range(n_chunks)]
    seen = 0
    for p in pieces:
        # A piece goes to the chunk where its middle word falls, so chunk sizes stay near `target`.
        g = min(int((seen + len(p) / 2) // target), n_chunks - 1)
        chunks[g].extend(p)
        seen += len(p)
    return [" ".join(c) for c in chunks if c]


def _with_sentences(texts: list[str]) -> list[str]:
    """Each text, followed by its sentences of >= MIN_SENTENCE_WORDS words when it has several."""
    units: list[str] = []
    for t in texts:
        units.append(t)
        sents = split_sentences(t)
        if len(sents) > 1:
            units.extend(s for s in sents if len(s.split()) >= MIN_SENTENCE_WORDS)
    return units


# --------------------------------------------------------------------------- calibration statistics

def roc_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of a random positive > that of a random negative), ties count half (Mann-Whitney U)."""
    pos = np.asarray(pos, dtype=np.float64)
    neg = np.asarray(neg, dtype=np.float64)
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    neg_sorted = np.sort(neg)
    below = np.searchsorted(neg_sorted, pos, side="left")  # negatives strictly below each positive
    equal = np.searchsorted(neg_sorted, pos, side="right") - below
    return float((below.sum() + 0.5 * equal.sum()) / (len(pos) * len(neg)))


def youden_threshold(pos: np.ndarray, neg: np.ndarray) -> tuple[float, float]:
    """(threshold, balanced accuracy) maximising TPR + TNR, with "on" meaning score >= threshold.

    Candidates are midpoints between consecutive distinct scores (plus one below and one above
    all of them), so the threshold sits in a gap rather than on a calibration point; among
    equally good candidates the middle one is taken.
    """
    pos = np.asarray(pos, dtype=np.float64)
    neg = np.asarray(neg, dtype=np.float64)
    values = np.unique(np.concatenate([pos, neg]))  # sorted distinct scores, (U,)
    cands = np.concatenate([[values[0] - 1e-3], (values[:-1] + values[1:]) / 2, [values[-1] + 1e-3]])
    tpr = 1.0 - np.searchsorted(np.sort(pos), cands, side="left") / len(pos)  # share of pos >= t
    tnr = np.searchsorted(np.sort(neg), cands, side="left") / len(neg)  # share of neg < t
    bal = (tpr + tnr) / 2  # (C,)
    best = np.flatnonzero(bal >= bal.max() - 1e-12)
    i = int(best[len(best) // 2])
    return float(cands[i]), float(bal[i])


# --------------------------------------------------------------------------- classifier

@dataclass
class DomainClassifier:
    """On-domain iff the nearest-chunk cosine similarity (mean of the top `k`) >= `threshold`."""

    threshold: float
    matrix: np.ndarray  # (M, dim) float32 normalised embeddings of the reference chunks
    chunks: list[str]  # (M,) the reference chunks' text, to show which one matched
    k: int = 1
    calibration: dict = field(default_factory=dict)
    embedder: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def fit(cls, domain_texts: list[str], general_texts: list[str], *, embedder=None, chunk_words: int = 80,
            seed: int = 0, k: int = 1) -> "DomainClassifier":
        """Build the reference set from the domain texts and calibrate the threshold (see module doc)."""
        chunks = [c for t in domain_texts for c in chunk_text(t, chunk_words)]
        general = [g.strip() for g in general_texts if g and g.strip()]
        if len(chunks) < 2:
            raise TunesmithError(
                f"domain corpus too small: it gives {len(chunks)} chunk(s) of ~{chunk_words} words, need at least 2"
            )
        if not general:
            raise TunesmithError("no general (out-of-domain) texts given: the threshold needs them for calibration")
        if k < 1:
            raise TunesmithError(f"k must be >= 1, got {k}")
        emb = embedder or get_embedder()
        perm = np.random.default_rng(seed).permutation(len(chunks))
        n_hold = min(max(1, round(HOLDOUT_SHARE * len(chunks))), len(chunks) - 1)
        held = [chunks[i] for i in sorted(perm[:n_hold])]
        reference = [chunks[i] for i in sorted(perm[n_hold:])]
        clf = cls(threshold=0.0, matrix=emb.encode(reference), chunks=reference, k=k, embedder=emb)
        pos = clf.scores(_with_sentences(held))  # (n_in,)
        neg = clf.scores(_with_sentences(general))  # (n_out,)
        clf.threshold, bal = youden_threshold(pos, neg)
        clf.calibration = {
            "auc": roc_auc(pos, neg),
            "balanced_accuracy": bal,
            "tpr": float((pos >= clf.threshold).mean()),
            "tnr": float((neg < clf.threshold).mean()),
            "threshold": clf.threshold,
            "n_in": int(len(pos)),
            "n_out": int(len(neg)),
            "n_reference": len(reference),
            "n_heldout_chunks": len(held),
            "chunk_words": chunk_words,
            "k": k,
            "seed": seed,
        }
        return clf

    def _embedder(self):
        if self.embedder is None:
            self.embedder = get_embedder()
        return self.embedder

    def scores(self, texts: list[str]) -> np.ndarray:
        """(N,) float32: mean cosine similarity to the `k` nearest reference chunks."""
        if len(texts) == 0:
            return np.zeros(0, dtype=np.float32)
        emb = self._embedder().encode(list(texts))  # (N, dim)
        if emb.shape[1] != self.matrix.shape[1]:
            raise TunesmithError(
                f"embedder gives {emb.shape[1]} dimensions but the classifier was built with {self.matrix.shape[1]}"
            )
        _, top = cosine_topk(emb, self.matrix, self.k)  # (N, k)
        return top.mean(axis=1).astype(np.float32)

    def predict(self, texts: list[str]) -> np.ndarray:
        """(N,) bool: True where the text is on-domain."""
        return self.scores(texts) >= self.threshold

    def save(self, path: Path) -> tuple[Path, Path]:
        """Write `<path>.npz` (the matrix) and `<path>.json` (the rest), each atomically."""
        npz, meta = _paths(path)
        write_atomic(npz, lambda f: np.savez(f, matrix=np.asarray(self.matrix, dtype=np.float32)), binary=True)
        doc = {
            "format_version": FORMAT_VERSION,
            "embedding_model": EMBEDDING_PACKAGE,
            "dim": int(self.matrix.shape[1]),
            "threshold": self.threshold,
            "k": self.k,
            "calibration": self.calibration,
            "chunks": self.chunks,
        }
        write_atomic(meta, lambda f: f.write(json.dumps(doc, indent=1, ensure_ascii=False).encode("utf-8")), binary=True)
        return npz, meta

    @classmethod
    def load(cls, path: Path, *, embedder=None) -> "DomainClassifier":
        """Read what `save` wrote (the suffix of `path`, if any, is ignored)."""
        npz, meta = _paths(path)
        for p in (npz, meta):
            if not p.exists():
                raise TunesmithError(f"{p}: domain classifier file not found (build it with DomainClassifier.fit)")
        try:
            doc = json.loads(meta.read_text(encoding="utf-8"))
            with np.load(npz) as data:
                matrix = np.asarray(data["matrix"], dtype=np.float32)
        except (OSError, ValueError, KeyError) as err:
            raise TunesmithError(f"{meta.with_suffix('')}: unreadable domain classifier ({err})") from None
        if doc.get("format_version") != FORMAT_VERSION or matrix.shape != (len(doc["chunks"]), doc["dim"]):
            raise TunesmithError(f"{meta}: incompatible domain classifier file (rebuild it with DomainClassifier.fit)")
        return cls(threshold=float(doc["threshold"]), matrix=matrix, chunks=list(doc["chunks"]), k=int(doc["k"]),
                   calibration=dict(doc["calibration"]), embedder=embedder)


def _paths(path: Path) -> tuple[Path, Path]:
    path = Path(path)
    return path.with_suffix(".npz"), path.with_suffix(".json")


# --------------------------------------------------------------------------- declines

# Phrasings that mean "I will not / cannot answer this" (case-insensitive; curly apostrophes are
# straightened first). Each needs a first-person subject or a scope word, so that a factual answer
# such as "The gauge is not able to measure depth" is not read as a decline.
DECLINE_PATTERNS: tuple[str, ...] = (
    r"\bI (?:really |honestly )?(?:do not|don't|dont|do not really|don't really) know\b",
    r"\b(?:I|we)(?:'m| am|'re| are)? not (?:sure|certain)\b",
    r"\bI(?:'m| am)? (?:not )?unsure\b",
    r"\b(?:I|we) (?:cannot|can't|cant|can not|could not|couldn't|am unable to|are unable to) "
    r"(?:answer|help|provide|say|tell|assist|comment|share|find|give|know|determine|confirm)\b",
    r"\b(?:I|we)(?:'m| am|'re| are) (?:not able|unable) to\b",
    r"\b(?:not able|unable) to (?:answer|help|assist|provide|say)\b",
    r"\b(?:outside|beyond) (?:of )?(?:my|our|the) (?:scope|expertise|knowledge|area|domain|remit)\b",
    r"\bnot (?:within|in) (?:my|our) (?:scope|expertise|knowledge|area|domain|remit)\b",
    r"\b(?:I|we) (?:do not|don't|dont) have (?:any |enough |the |that )?"
    r"(?:information|info|data|knowledge|details|access)\b",
    r"\b(?:I|we) have no (?:information|info|data|knowledge|details|idea)\b",
    r"\bno (?:information|data|details) (?:is |are )?(?:available )?(?:about|on|regarding)\b",
    r"\b(?:I|we)(?:'m| am|'re| are) afraid (?:that )?(?:I|we)\b",
    r"^\W*(?:I'm |I am |we're |we are )?(?:very |so |really )?sorry\b",  # an apology opening the answer
    r"\bonly (?:answer|help with) questions about\b",
)
_DECLINE_RE = re.compile("|".join(f"(?:{p})" for p in DECLINE_PATTERNS), re.IGNORECASE)


def is_decline(text: str) -> bool:
    """True when the answer declines or says it does not know (any of DECLINE_PATTERNS)."""
    return bool(_DECLINE_RE.search(text.replace("\u2019", "'").replace("\u2018", "'")))


# --------------------------------------------------------------------------- report

SHORT_ANSWER_WORDS = 4


def is_policy_decline(text: str, decline_message: str | None = None) -> bool:
    """A decline by the phrasings of DECLINE_PATTERNS, or the policy's own decline message."""
    norm = lambda t: " ".join(re.findall(r"\w+", t.lower()))  # noqa: E731 - punctuation and case do not matter
    return is_decline(text) or bool(decline_message and norm(decline_message) and norm(decline_message) in norm(text))


def _topic(answers: list[str], questions: list[str] | None, index: list[int], classifier) -> tuple[list[int], int]:
    """The embedding topic score per in-domain answer (a bare value is judged with its question:
    alone, "472 crowns" has no topic). Returns (0/1 per item, how many were short)."""
    short = [questions is not None and len(answers[i].split()) <= SHORT_ANSWER_WORDS for i in index]
    texts = [f"{questions[i]}\n{answers[i]}" if s else answers[i] for i, s in zip(index, short)]
    return [int(x) for x in classifier.predict(texts)], int(sum(short))


def adherence_report(answers: list[str], *, classifier: DomainClassifier | None = None, content=None,
                     ood_mask: list[bool] | None = None, ood_policy: str = "decline",
                     questions: list[str] | None = None, decline_message: str | None = None) -> dict:
    """Domain-adherence numbers for one system's answers.

    content (a tunesmith.eval.grounding.ContentJudge, needs `questions`): per_item is whether
    what each answer asserts is supported by the domain passages for its question, the primary
    figure; the embedding `classifier`'s on-topic score is then the secondary `topic_*` figure.
    Without `content`, per_item is the topic score (the method before content grounding).

    on_domain_share / per_item: over answers to in-domain questions (all answers when no
    ood_mask), in order. ood_handled_share / ood_per_item: over out-of-domain questions, in
    order; "handled" means the answer declines (policy "decline": a decline phrasing or the
    policy's decline_message) or does not (policy "answer"). in_index / ood_index give each
    per-item entry's position in `answers`. Shares are None when their set is empty.
    """
    if ood_policy not in ("decline", "answer"):
        raise TunesmithError(f"ood_policy must be 'decline' or 'answer', got {ood_policy!r}")
    if classifier is None and content is None:
        raise TunesmithError("adherence_report needs a content judge or a topic classifier")
    mask = [False] * len(answers) if ood_mask is None else [bool(m) for m in ood_mask]
    if len(mask) != len(answers):
        raise TunesmithError(f"ood_mask has {len(mask)} entries but there are {len(answers)} answers")
    if questions is not None and len(questions) != len(answers):
        raise TunesmithError(f"{len(questions)} questions for {len(answers)} answers")
    if content is not None and questions is None:
        raise TunesmithError("content adherence needs the questions (passages are retrieved for them)")
    in_index = [i for i, m in enumerate(mask) if not m]
    ood_index = [i for i, m in enumerate(mask) if m]
    report: dict = {"n_in": len(in_index)}
    if classifier is not None:
        topic, n_short = _topic(answers, questions, in_index, classifier)
        report.update(topic_per_item=topic, topic_share=float(np.mean(topic)) if topic else None,
                      short_answers_with_question=n_short, threshold=classifier.threshold)
    if content is not None:
        details = content.judge_all([answers[i] for i in in_index], [questions[i] for i in in_index])
        per_item = [d["adheres"] for d in details]
        report.update(method=content.settings(), details=details)
    else:
        per_item = report["topic_per_item"]
        report["method"] = {"method": "embedding topic classifier"}
    report.update(on_domain_share=float(np.mean(per_item)) if per_item else None, per_item=per_item)
    if ood_mask is not None:
        declines = [is_policy_decline(answers[i], decline_message) for i in ood_index]
        handled = [int(d) if ood_policy == "decline" else int(not d) for d in declines]
        report.update({
            "ood_handled_share": float(np.mean(handled)) if handled else None,
            "ood_per_item": handled,
            "n_ood": len(ood_index),
            "ood_policy": ood_policy,
            "in_index": in_index,
            "ood_index": ood_index,
        })
    return report
