"""Evaluation metrics as pure functions: per-item scores and corpus-level metrics.

Per-item scores (QA exact match / token F1 / containment, math answer correctness, ROUGE)
return floats in [0, 1] so that every regimen's results can be averaged and bootstrapped
the same way (see `tunesmith.eval.stats`). Corpus metrics (BLEU, chrF, classification
metrics) take whole lists; bootstrap them by resampling items with a `statistic` function.

The per-item metrics registered in `METRICS` share one contract:
`fn(pred: str, refs: str | number | list) -> dict[str, float]`.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from functools import lru_cache
from typing import Any, Hashable, Sequence

from tunesmith.errors import TunesmithError
from tunesmith.registry import METRICS

Refs = str | Sequence[str]

# --------------------------------------------------------------------------- QA (SQuAD)

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = frozenset(string.punctuation)


def normalize_answer(s: str) -> str:
    """SQuAD normalisation: lowercase, drop punctuation and articles, collapse whitespace."""
    s = "".join(ch for ch in str(s).lower() if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def _as_refs(refs: Any) -> list[str]:
    """One reference or several, as a non-empty list of strings."""
    if isinstance(refs, str) or not isinstance(refs, Sequence):
        refs = [refs]
    out = [r if isinstance(r, str) else str(r) for r in refs if r is not None]
    if not out:
        raise TunesmithError("an item has no reference answer; every item needs at least one")
    return out


def exact_match(pred: str, refs: Refs) -> float:
    """1.0 if the normalised prediction equals any normalised reference."""
    p = normalize_answer(pred)
    return max(float(p == normalize_answer(r)) for r in _as_refs(refs))


def _f1_one(pred_tokens: list[str], ref_tokens: list[str]) -> float:
    if not pred_tokens or not ref_tokens:
        # SQuAD v2 convention: two empty answers agree, one empty answer scores zero.
        return float(pred_tokens == ref_tokens)
    same = sum((Counter(pred_tokens) & Counter(ref_tokens)).values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(pred: str, refs: Refs) -> float:
    """SQuAD token F1 (bag of normalised tokens), max over references."""
    p = normalize_answer(pred).split()
    return max(_f1_one(p, normalize_answer(r).split()) for r in _as_refs(refs))


def answer_contained(pred: str, refs: Refs) -> float:
    """1.0 if a normalised reference occurs in the normalised prediction as whole words.

    Whole words so that "dog" is not found in "hotdog"; an empty normalised reference only
    matches an empty prediction (otherwise it would be contained in everything).
    """
    p = f" {normalize_answer(pred)} "
    best = 0.0
    for r in _as_refs(refs):
        rn = normalize_answer(r)
        hit = (f" {rn} " in p) if rn else (p.strip() == "")
        best = max(best, float(hit))
    return best


@METRICS.register("qa")
def qa_scores(pred: str, refs: Refs) -> dict[str, float]:
    """Per-item QA scores: exact_match, f1 and contains."""
    return {
        "exact_match": exact_match(pred, refs),
        "f1": token_f1(pred, refs),
        "contains": answer_contained(pred, refs),
    }


# --------------------------------------------------------------------- classification


def _ordered_labels(golds: Sequence[Hashable], preds: Sequence[Hashable], labels: Sequence[Hashable] | None):
    """(macro labels, matrix labels): given labels first, then the rest sorted by str."""
    given = list(dict.fromkeys(labels)) if labels is not None else []
    extra_gold = sorted(set(golds) - set(given), key=str)
    macro = given + extra_gold
    # Predicted labels outside the label set (e.g. unparseable outputs) still get a matrix
    # column so that every row sums to that label's support.
    pred_only = sorted(set(preds) - set(macro), key=str)
    return macro, macro + pred_only


def classification_metrics(
    preds: Sequence[Hashable], golds: Sequence[Hashable], labels: Sequence[Hashable] | None = None
) -> dict[str, Any]:
    """accuracy, macro_f1, per_label {precision, recall, f1, support}, confusion_matrix.

    macro_f1 averages over the given labels plus every gold label; a label with neither
    predictions nor gold items is excluded (its F1 is undefined), and zero-division in
    precision/recall/F1 counts as 0. The confusion matrix is
    `{"labels": [...], "matrix": [[...]]}` with rows = gold and columns = predicted.
    """
    preds, golds = list(preds), list(golds)
    if len(preds) != len(golds):
        raise TunesmithError(f"classification_metrics: {len(preds)} predictions but {len(golds)} gold labels")
    if not golds:
        raise TunesmithError("classification_metrics: no items to score")
    macro_labels, all_labels = _ordered_labels(golds, preds, labels)
    index = {lab: i for i, lab in enumerate(all_labels)}
    matrix = [[0] * len(all_labels) for _ in all_labels]
    for g, p in zip(golds, preds):
        matrix[index[g]][index[p]] += 1

    per_label: dict[Hashable, dict[str, float]] = {}
    for lab, i in index.items():
        tp = matrix[i][i]
        n_pred = sum(row[i] for row in matrix)
        n_gold = sum(matrix[i])
        precision = tp / n_pred if n_pred else 0.0
        recall = tp / n_gold if n_gold else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_label[lab] = {"precision": precision, "recall": recall, "f1": f1, "support": n_gold}

    scored = [
        lab for lab in macro_labels
        if per_label[lab]["support"] or sum(row[index[lab]] for row in matrix)
    ]
    macro_f1 = sum(per_label[lab]["f1"] for lab in scored) / len(scored) if scored else 0.0
    correct = sum(matrix[i][i] for i in range(len(all_labels)))
    return {
        "accuracy": correct / len(golds),
        "macro_f1": macro_f1,
        "per_label": per_label,
        "confusion_matrix": {"labels": all_labels, "matrix": matrix},
        "n": len(golds),
    }


# ------------------------------------------------------------------------------- math

# One number: optional sign (a "-" right after a word character or ")" is subtraction or a
# range, not a sign), optional "$", then "1,234,567.5" | "1234.5" | ".5", an optional
# fraction denominator "/4" and an optional "%" (kept as the bare number: "25%" -> 25).
_NUMBER = re.compile(
    r"""
    (?:(?<![\w)])(?P<neg>[-\u2212]))?\s*\$?\s*
    (?P<num>\d{1,3}(?:,\d{3})+(?!\d)(?:\.\d+)? | \d+(?:\.\d+)? | \.\d+)
    (?:\s*/\s*(?P<den>\d+(?:\.\d+)?))?
    %?
    """,
    re.VERBOSE,
)


def _numbers(text: str) -> list[float]:
    out = []
    for m in _NUMBER.finditer(text):
        value = float(m.group("num").replace(",", ""))
        if m.group("den") is not None:
            den = float(m.group("den"))
            if den == 0:
                continue  # "1/0" is not an answer
            value /= den
        out.append(-value if m.group("neg") else value)
    return out


def extract_final_number(text: str) -> float | None:
    """The model's final numeric answer, or None.

    If the text has a GSM8K-style "####" marker, the first number after the last marker
    (None if there is none: the model declared an answer and gave no number); otherwise the
    last number in the text. Handles "1,234", "$5", "25%", "-3", "2.5", ".5" and "3/4".
    """
    if text is None:
        return None
    text = str(text)
    if "####" in text:
        nums = _numbers(text.rsplit("####", 1)[1])
        return nums[0] if nums else None
    nums = _numbers(text)
    return nums[-1] if nums else None


def math_correct(pred_text: str, ref: float | int | str) -> float:
    """1.0 if the prediction's final number equals the reference (rel 1e-6 / abs 1e-9).

    `ref` is a number or a text whose final number is the answer (e.g. "... #### 72").
    """
    if isinstance(ref, (int, float)) and not isinstance(ref, bool):
        target = float(ref)
    else:
        target = extract_final_number(ref)
        if target is None:
            raise TunesmithError(f"math reference {str(ref)[:60]!r} contains no number")
    got = extract_final_number(pred_text)
    if got is None:
        return 0.0
    return float(math.isclose(got, target, rel_tol=1e-6, abs_tol=1e-9))


@METRICS.register("math")
def math_scores(pred: str, refs: Any) -> dict[str, float]:
    """Per-item math score: {"correct": 0/1}, max over references if several."""
    if isinstance(refs, (str, int, float)) or not isinstance(refs, Sequence):
        refs = [refs]
    if not refs:
        raise TunesmithError("an item has no reference answer; every item needs at least one")
    return {"correct": max(math_correct(pred, r) for r in refs)}


# ------------------------------------------------------------------------------ ROUGE

_ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


@lru_cache(maxsize=1)
def _rouge_scorer():
    # Imported lazily so the rest of this module works without the optional package.
    try:
        from rouge_score import rouge_scorer
    except ImportError as err:
        raise TunesmithError("ROUGE needs the 'rouge-score' package: pip install rouge-score") from err
    return rouge_scorer.RougeScorer(list(_ROUGE_TYPES), use_stemmer=True)


@METRICS.register("rouge")
def rouge_scores(pred: str, refs: Refs) -> dict[str, float]:
    """ROUGE-1/2/L F-measure with Porter stemming; max per metric over references.

    Uses rouge_score's default tokenizer, which lowercases and keeps only [a-z0-9] tokens,
    so it is meaningful for English text only.
    """
    scorer = _rouge_scorer()
    best = dict.fromkeys(_ROUGE_TYPES, 0.0)
    for r in _as_refs(refs):
        scores = scorer.score(r, str(pred))  # score(target, prediction)
        for key in _ROUGE_TYPES:
            best[key] = max(best[key], scores[key].fmeasure)
    return best


# ---------------------------------------------------------------------- BLEU and chrF


def _reference_streams(preds: Sequence[str], refs_list: Sequence[Refs]) -> list[list[str]]:
    """Transpose per-item references into sacrebleu's reference streams.

    sacrebleu wants one stream per reference position, every stream as long as the
    predictions, and no gaps. Items with fewer references than the maximum get their last
    reference duplicated: multi-reference BLEU takes the max n-gram count over references
    and the closest reference length, and chrF keeps the best-matching reference, so a
    duplicate reference never changes the score.
    """
    if len(preds) != len(refs_list):
        raise TunesmithError(f"{len(preds)} predictions but {len(refs_list)} reference lists")
    per_item = [_as_refs(r) for r in refs_list]
    width = max((len(r) for r in per_item), default=1)
    padded = [r + [r[-1]] * (width - len(r)) for r in per_item]
    return [[item[j] for item in padded] for j in range(width)]


def _sacrebleu():
    try:
        import sacrebleu
    except ImportError as err:
        raise TunesmithError("BLEU/chrF need the 'sacrebleu' package: pip install sacrebleu") from err
    return sacrebleu


def bleu(preds: Sequence[str], refs_list: Sequence[Refs]) -> float:
    """Corpus BLEU (sacrebleu defaults, 0-100 scale); `refs_list` holds each item's references."""
    preds = [str(p) for p in preds]
    return float(_sacrebleu().corpus_bleu(preds, _reference_streams(preds, refs_list)).score)


def chrf(preds: Sequence[str], refs_list: Sequence[Refs]) -> float:
    """Corpus chrF (sacrebleu defaults, 0-100 scale); `refs_list` holds each item's references."""
    preds = [str(p) for p in preds]
    return float(_sacrebleu().corpus_chrf(preds, _reference_streams(preds, refs_list)).score)


# ------------------------------------------------------------------------------ code


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k) for n samples, c correct.

    Computed as 1 - prod_{i=n-c+1..n} (1 - k/i), which avoids huge binomials.
    """
    if not (0 <= c <= n) or not (1 <= k <= n):
        raise TunesmithError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0  # every k-subset contains a correct sample
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def sentence_bleu(pred: str, refs: Refs) -> float:
    """Sentence BLEU (sacrebleu's sentence_bleu: exponential smoothing, 0-100 scale)."""
    return float(_sacrebleu().sentence_bleu(str(pred), _as_refs(refs)).score)


def sentence_chrf(pred: str, refs: Refs) -> float:
    """Sentence chrF (sacrebleu defaults, 0-100 scale)."""
    return float(_sacrebleu().sentence_chrf(str(pred), _as_refs(refs)).score)


@METRICS.register("translation")
def translation_scores(pred: str, refs: Refs) -> dict[str, float]:
    """Per-item BLEU and chrF of one translation (corpus figures: `bleu`, `chrf`)."""
    return {"bleu": sentence_bleu(pred, refs), "chrf": sentence_chrf(pred, refs)}


# ------------------------------------------------------------------ open-ended writing

_WORD = re.compile(r"\w+", re.UNICODE)


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters, digits, underscore; punctuation dropped)."""
    return _WORD.findall(str(text).lower())


def _ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct-n (Li et al. 2016) over a set of texts: distinct word n-grams / all word n-grams,
    pooled over every text, so an arm that writes the same thing for every prompt scores low.
    0.0 when the texts hold no n-gram at all."""
    grams = [g for t in texts for g in _ngrams(words(t), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition_rate(text: str, n: int = 3) -> float:
    """Share of a text's word n-grams that repeat an n-gram seen earlier in the same text (rep-n,
    Welleck et al. 2019): 0 for no repetition, near 1 for a loop. 0.0 for a text shorter than n."""
    grams = _ngrams(words(text), n)
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def length_ratio(pred: str, refs: Refs) -> float:
    """Words of the answer / words of the closest-length reference (1.0: the same length)."""
    n = len(words(pred))
    ref_lens = [len(words(r)) for r in _as_refs(refs)]
    closest = min(ref_lens, key=lambda r: (abs(r - n), r))
    return n / closest if closest else float(n == 0)


def length_within(pred: str, refs: Refs, tolerance: float = 0.5) -> float:
    """1.0 when the answer's length is within +-tolerance of the closest reference's (length control)."""
    return float(abs(length_ratio(pred, refs) - 1.0) <= tolerance + 1e-12)
