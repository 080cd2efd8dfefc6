"""Score a classification-head run (regimen `head`): predict labels for texts and evaluate on a
classification file with the metric names of the generative classification eval (`accuracy`,
`macro_f1`, each with a 95% bootstrap confidence interval), so that a study compares the two
directly.

The exported `model/` loads with transformers alone (a full sequence-classification model), or
with transformers and peft (a LoRA adapter whose `score` head is saved alongside); `labels.json`
gives the label of each class index. Texts are encoded exactly as in training: the raw text,
the tokenizer's own special tokens, truncated to the run's `max_length`.
"""

from __future__ import annotations

import time
from pathlib import Path

from tunesmith.errors import TunesmithError
from tunesmith.models.classifier import load_head, predict_probs

MACRO_F1_RESAMPLES = 500  # as the generative eval: macro-F1 is recomputed per resample


def _predict_ids(model, tok, texts: list[str], max_length: int, batch_size: int) -> list[int]:
    return predict_probs(model, tok, texts, max_length, batch_size).argmax(-1).tolist()


def predict_labels(run_dir: str | Path, texts: list[str], batch_size: int = 16) -> list[str]:
    """The predicted label of each text (labels as in the training data)."""
    model, tok, labels, max_length = load_head(run_dir)
    return [labels[i] for i in _predict_ids(model, tok, list(texts), max_length, batch_size)]


def evaluate_head(run_dir: str | Path, data_path: str | Path, *, limit: int | None = None,
                  batch_size: int = 16, bootstrap: int = 1000, seed: int = 0) -> dict:
    """Accuracy and macro-F1 (95% bootstrap CIs, as `tunesmith eval` reports them) on a
    classification file ({text, label} or {sentence, label}); the first `limit` records only."""
    from tunesmith.data.schemas import load_dataset
    from tunesmith.eval import metrics as M
    from tunesmith.eval.stats import bootstrap_ci

    rows = load_dataset(data_path, accept=("classification",)).rows()  # bad data fails before the model loads
    if limit is not None:
        rows = rows[:limit]
    if not rows:
        raise TunesmithError(f"{data_path}: no records to evaluate")
    golds = [r["label"] for r in rows]
    model, tok, labels, max_length = load_head(run_dir)
    t0 = time.time()
    preds = [labels[i] for i in _predict_ids(model, tok, [r["text"] for r in rows], max_length, batch_size)]
    seconds = time.time() - t0

    correct = [float(p == g) for p, g in zip(preds, golds)]
    cm = M.classification_metrics(preds, golds, labels=labels)
    pairs = list(zip(preds, golds))
    metrics = {
        "accuracy": bootstrap_ci(correct, n_resamples=bootstrap, seed=seed),
        "macro_f1": bootstrap_ci(pairs, statistic=lambda ps: M.classification_metrics([p for p, _ in ps], [g for _, g in ps], labels=labels)["macro_f1"],
                                 n_resamples=min(bootstrap, MACRO_F1_RESAMPLES), seed=seed),
    }
    return {
        "task": "classification", "n": len(rows), "primary_metric": "accuracy", "metrics": metrics,
        "confusion_matrix": cm["confusion_matrix"], "per_label": cm["per_label"], "labels": labels,
        "unknown_gold_labels": sorted(set(golds) - set(labels)),
        "method": "classification head", "model": {"run": str(run_dir)}, "data": {"path": str(data_path)},
        "per_item": [{"pred": p, "label": g, "correct": c} for p, g, c in zip(preds, golds, correct)],
        "seconds": round(seconds, 2), "seconds_per_item": round(seconds / len(rows), 4),
    }
