"""Exact and near-duplicate detection for dataset texts.

Exact duplicates: texts equal after normalising (casefold, strip punctuation, collapse
whitespace). Near duplicates: MinHash signatures (fixed seed, so results are the same on
every run) over word 3-gram shingles, LSH banding to find candidate pairs without
comparing all pairs, then each candidate verified with the true Jaccard similarity of the
two shingle sets. Vectorised with numpy: 20k texts of ~100 words take about a second.
"""

from __future__ import annotations

import re
from collections import defaultdict

import numpy as np

NUM_PERM = 128
SEED = 20240607
SHINGLE_WORDS = 3
CANDIDATES_PER_TEXT = 20
_BLOCK = 8192  # shingles hashed per numpy step: small enough to stay in CPU cache
_PUNCT = re.compile(r"[^\w\s]+")
_PAD = np.uint64(2**32 - 1)  # word id that pads texts shorter than one shingle
_M32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)


def normalize(text: str) -> str:
    """Casefold, strip punctuation and collapse whitespace: the key for exact duplicates."""
    return " ".join(_PUNCT.sub("", text.casefold()).split())


def exact_groups(texts: list[str], norms: list[str] | None = None) -> list[list[int]]:
    """Groups (of 2+ indices) of texts equal after normalising; blank texts are ignored."""
    by_key: dict[str, list[int]] = defaultdict(list)
    for i, key in enumerate(norms if norms is not None else map(normalize, texts)):
        if key:
            by_key[key].append(i)
    return sorted((g for g in by_key.values() if len(g) > 1), key=lambda g: g[0])


class _Shingles:
    """Word 3-gram hashes of many texts, in one flat array (text i: flat[start[i]:end[i]]).

    Words get ids from a per-call vocabulary (in text order, so deterministic), and each
    3-gram's hash is a wrapping linear mix of its word ids: no per-shingle Python work,
    and no use of hash(), which Python salts per process."""

    def __init__(self, norms: list[str]):
        self._sets: dict[int, set[int]] = {}
        vocab: dict[str, int] = {}
        ids: list[int] = []
        counts = np.zeros(len(norms), dtype=np.int64)
        for i, norm in enumerate(norms):
            words = norm.split()
            if words:
                ids.extend(vocab.setdefault(w, len(vocab)) for w in words)
                ids.extend([int(_PAD)] * max(0, SHINGLE_WORDS - len(words)))
                counts[i] = max(len(words), SHINGLE_WORDS)
        w = np.array(ids, dtype=np.uint64)
        m = np.random.default_rng(SEED).integers(1, 2**63, size=SHINGLE_WORDS, dtype=np.uint64) | np.uint64(1)
        grams = counts - (SHINGLE_WORDS - 1)
        grams[counts == 0] = 0
        self.end = np.cumsum(grams)
        self.start = self.end - grams
        if len(w) == 0:
            self.flat = np.zeros(0, dtype=np.uint64)
            return
        n = len(w) - (SHINGLE_WORDS - 1)
        mixed = sum(w[k:k + n] * m[k] for k in range(SHINGLE_WORDS))
        # Keep only windows that lie inside one text (drop those spanning a text boundary).
        token_start = np.cumsum(counts) - counts
        keep = np.repeat(token_start[grams > 0], grams[grams > 0]) + _ranks(grams[grams > 0])
        self.flat = mixed[keep]

    def size(self, i: int) -> int:
        return int(self.end[i] - self.start[i])

    def set(self, i: int) -> set[int]:
        if i not in self._sets:
            self._sets[i] = set(self.flat[self.start[i]:self.end[i]].tolist())
        return self._sets[i]


def _ranks(lengths: np.ndarray) -> np.ndarray:
    """[0..l0-1, 0..l1-1, ...] for the given lengths."""
    total = int(lengths.sum())
    offsets = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.arange(total, dtype=np.int64) - offsets


def signatures(sh: _Shingles, items: list[int]) -> np.ndarray:
    """MinHash signatures, shape (NUM_PERM, len(items)), of non-empty shingle sets.

    Hash family: multiply-add-shift, h(x) = (a*x + b) >> 32 in wrapping 64-bit arithmetic
    over 32-bit folded shingle hashes; no modulo, which numpy does slowly."""
    rng = np.random.default_rng(SEED + 1)
    a = (rng.integers(1, 2**63, size=NUM_PERM, dtype=np.uint64) | np.uint64(1))[:, None]
    b = rng.integers(0, 2**63, size=NUM_PERM, dtype=np.uint64)[:, None]
    sig = np.empty((NUM_PERM, len(items)), dtype=np.uint64)
    k = 0
    while k < len(items):
        # A run of whole texts totalling about _BLOCK shingles (or one longer text).
        j, total = k, 0
        while j < len(items) and (j == k or total + sh.size(items[j]) <= _BLOCK):
            total += sh.size(items[j])
            j += 1
        parts = [sh.flat[sh.start[i]:sh.end[i]] for i in items[k:j]]
        x = np.concatenate(parts)
        x = (x >> _S32) ^ (x & _M32)
        offsets = np.cumsum([0] + [len(p) for p in parts[:-1]])
        if j - k == 1:
            sig[:, k] = _min_hash_chunked(x, a, b)
        else:
            h = a * x[None, :]
            h += b
            h >>= _S32
            sig[:, k:j] = np.minimum.reduceat(h, offsets, axis=1)
        k = j
    return sig


def _min_hash_chunked(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.full(NUM_PERM, np.iinfo(np.uint64).max, dtype=np.uint64)
    for lo in range(0, len(x), _BLOCK):
        h = a * x[None, lo:lo + _BLOCK]
        h += b
        h >>= _S32
        np.minimum(out, h.min(axis=1), out=out)
    return out


def _bands_for(threshold: float) -> tuple[int, int]:
    """(bands, rows): the most rows per band (fewest spurious candidates) that still finds
    a pair at the threshold with >= 99% probability."""
    for rows in (16, 8, 4, 2, 1):
        bands = NUM_PERM // rows
        if 1 - (1 - threshold ** rows) ** bands >= 0.99:
            return bands, rows
    return NUM_PERM, 1


def candidate_pairs(sig: np.ndarray, threshold: float, split: int | None = None,
                    limit: int = 2_000_000) -> set[tuple[int, int]]:
    """LSH banding: column pairs that agree on every row of at least one band. With
    `split`, only pairs with i < split <= j (one from each side) are kept. At most
    `limit` pairs: templated data can put thousands of texts in one bucket."""
    bands, rows = _bands_for(threshold)
    mix = np.random.default_rng(SEED + 2).integers(1, 2**63, size=(rows, 1), dtype=np.uint64) | np.uint64(1)
    pairs: set[tuple[int, int]] = set()
    for band in range(bands):
        keys = (sig[band * rows:(band + 1) * rows] * mix).sum(axis=0)  # wrapping: one key per band
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        run_starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        run_lengths = np.diff(np.r_[run_starts, len(keys)])
        multi = run_lengths > 1
        for start, length in zip(run_starts[multi].tolist(), run_lengths[multi].tolist()):
            members = sorted(order[start:start + length].tolist())
            # With a split only cross pairs count: pair the two sides instead of filtering all pairs.
            cut = len(members) if split is None else next((x for x, i in enumerate(members) if i >= split), len(members))
            for x, i in enumerate(members[:cut]):
                for j in members[x + 1:] if split is None else members[cut:]:
                    pairs.add((i, j))
                if len(pairs) >= limit:
                    return pairs
    return pairs


def _near(sh: _Shingles, items: list[int], threshold: float, split: int | None,
          max_pairs: int) -> list[tuple[int, int, float]]:
    """Verified near pairs among `items` (text indices), most similar first."""
    live = [i for i in items if sh.size(i) > 0]
    if len(live) < 2:
        return []
    sig = signatures(sh, live)
    local_split = None if split is None else sum(1 for i in live if i < split)
    found = []
    # Candidates verified: a budget linear in the number of texts. Templated data (one prompt,
    # many numbers) puts thousands of texts in one LSH bucket, whose pairs grow quadratically.
    budget = min(20 * max_pairs, CANDIDATES_PER_TEXT * len(live))
    for x, y in sorted(candidate_pairs(sig, threshold, local_split, limit=budget)):
        i, j = live[x], live[y]
        a, b = sh.set(i), sh.set(j)
        sim = len(a & b) / len(a | b)
        if sim >= threshold:
            found.append((i, j, round(sim, 4)))
            if len(found) >= max_pairs:
                break
    return sorted(found, key=lambda p: (-p[2], p[0], p[1]))


def find_duplicates(texts: list[str], near_threshold: float = 0.85,
                    max_pairs: int = 100_000) -> tuple[list[list[int]], list[tuple[int, int, float]]]:
    """Exact-duplicate groups and near-duplicate pairs (i, j, jaccard) among `texts`.

    Near pairs are searched among one representative per exact group, so a text is never
    reported as a near duplicate of its own exact copy. `max_pairs` bounds the output for
    heavily templated data where thousands of texts are mutually similar."""
    norms = [normalize(t) for t in texts]
    groups = exact_groups(texts, norms)
    copies = {i for g in groups for i in g[1:]}
    sh = _Shingles(norms)
    items = [i for i in range(len(texts)) if i not in copies]
    return groups, _near(sh, items, near_threshold, None, max_pairs)


def find_overlap(train: list[str], evals: list[str], near_threshold: float = 0.85,
                 max_pairs: int = 100_000) -> tuple[list[tuple[int, int]], list[tuple[int, int, float]]]:
    """Train/eval leakage, one pair per leaked eval text: exact pairs (train_i, eval_j), with i
    the first train text equal to eval text j after normalising, and near pairs (train_i,
    eval_j, jaccard) with i its most similar train text.

    Linear in the number of texts: repeated prompts are compared once per distinct text (every
    train copy times every eval copy would be quadratic and say nothing more)."""
    norms_train = [normalize(t) for t in train]
    norms_eval = [normalize(t) for t in evals]
    first_train: dict[str, int] = {}
    for i, key in enumerate(norms_train):
        if key:
            first_train.setdefault(key, i)
    exact = [(first_train[key], j) for j, key in enumerate(norms_eval) if key in first_train]
    # Near pairs among distinct texts: one train text per key, one eval text per key not seen in training.
    eval_first: dict[str, int] = {}
    for j, key in enumerate(norms_eval):
        if key and key not in first_train:
            eval_first.setdefault(key, j)
    reps_train, reps_eval = list(first_train.values()), list(eval_first.values())
    sh = _Shingles([norms_train[i] for i in reps_train] + [norms_eval[j] for j in reps_eval])
    split = len(reps_train)
    best: dict[int, tuple[int, float]] = {}  # eval representative -> (train text, similarity)
    for a, b, sim in _near(sh, list(range(len(reps_train) + len(reps_eval))), near_threshold, split, max_pairs):
        j, i = reps_eval[b - split], reps_train[a]
        if j not in best or (sim, -i) > (best[j][1], -best[j][0]):
            best[j] = (i, sim)
    near = [(best[eval_first[key]][0], j, best[eval_first[key]][1])
            for j, key in enumerate(norms_eval) if key in eval_first and eval_first[key] in best]
    return exact, sorted(near, key=lambda p: (-p[2], p[1], p[0]))[:max_pairs]
