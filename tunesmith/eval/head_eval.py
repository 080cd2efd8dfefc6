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

import json
import time
from pathlib import Path

import torch

from tunesmith.errors import TunesmithError

MACRO_F1_RESAMPLES = 500  # as the generative eval: macro-F1 is recomputed per resample


def load_head(run_dir: str | Path, device: str | torch.device | None = None):
    """(model in eval mode, tokenizer, labels, max_length) of a head run."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tunesmith.regimens.head import LABELS_FILE, _classifier_kwargs, _set_pad
    from tunesmith.runs import read_run

    run = Path(run_dir)
    meta = read_run(run)
    if meta.get("regimen") != "head":
        raise TunesmithError(f"{run}: not a classification-head run (regimen {meta.get('regimen')!r})")
    model_dir = run / "model"
    if meta.get("status") != "completed" or not (model_dir / LABELS_FILE).exists():
        raise TunesmithError(f"{run}: run did not complete (status {meta.get('status')!r}); finish it with `tunesmith train ... --resume`")
    labels = json.loads((model_dir / LABELS_FILE).read_text())
    tok = AutoTokenizer.from_pretrained(model_dir)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if (model_dir / "adapter_config.json").exists():
        from peft import PeftModel

        base = _adapter_base(meta, model_dir)
        model = AutoModelForSequenceClassification.from_pretrained(base, **_classifier_kwargs(labels))
        _set_pad(model, tok.pad_token_id)
        model = PeftModel.from_pretrained(model, model_dir)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32)
        if model.config.pad_token_id is None:
            _set_pad(model, tok.pad_token_id)
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(dev).eval()
    return model, tok, labels, int(meta.get("max_length") or 512)


def _adapter_base(meta: dict, model_dir: Path) -> str:
    """The plain model a LoRA head adapter sits on: the run's base model (as tunesmith resolves it),
    else the adapter's own base_model_name_or_path."""
    try:
        from tunesmith.models.loading import resolve_model

        ref = resolve_model(meta["base_model"])
        if ref.adapter is None and ref.base is None:
            return str(ref.weights_dir)
    except (TunesmithError, KeyError, OSError):
        pass
    base = json.loads((model_dir / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base or not Path(base).exists():
        raise TunesmithError(f"{model_dir}: cannot find the base model of this adapter ({base!r})")
    return base


@torch.no_grad()
def _predict_ids(model, tok, texts: list[str], max_length: int, batch_size: int) -> list[int]:
    from tunesmith.regimens.head import collate_ids, encode_texts

    if not texts:
        return []
    ids, _ = encode_texts(tok, texts, max_length)
    device = next(model.parameters()).device
    # Similar lengths together: less padding; results go back to the input order.
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = [0] * len(ids)
    for i in range(0, len(order), batch_size):
        chunk = order[i : i + batch_size]
        batch = {k: v.to(device) for k, v in collate_ids([ids[j] for j in chunk], tok.pad_token_id).items()}
        pred = model(**batch).logits.argmax(-1).tolist()
        for j, p in zip(chunk, pred):
            out[j] = p
    return out


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
