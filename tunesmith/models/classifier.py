"""A classification-head model (regimen `head`): how texts are encoded for it, how its exported
`model/` loads, and its label probabilities. Shared by the head regimen (training), evaluation,
`tunesmith generate` on a head run, the server's classification endpoint and export, so that all
of them encode and predict exactly as training did.

Texts are the raw text with the tokenizer's own special tokens, truncated to the run's
`max_length`; the classifier pools the last non-pad token (transformers' sequence
classification models), so batches are right-padded.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tunesmith.errors import TunesmithError

LABELS_FILE = "labels.json"  # in model/: the label of each class index, in order


def encode_texts(tok, texts: list[str], max_length: int) -> tuple[list[list[int]], dict]:
    """Token ids per text (the tokenizer's own special tokens, truncated to max_length), and stats."""
    # An empty list (no validation split) must not reach the tokenizer: it fails on empty batches.
    ids = [list(x) for x in tok(list(texts), truncation=False)["input_ids"]] if texts else []
    truncated = sum(len(x) > max_length for x in ids)
    ids = [x[:max_length] for x in ids]
    lengths = [len(x) for x in ids] or [0]
    stats = {"examples": len(ids), "truncated": truncated, "max_length": max_length,
             "mean_tokens": round(sum(lengths) / max(len(ids), 1), 1), "max_tokens": max(lengths)}
    return ids, stats


def collate_ids(seqs: list[list[int]], pad_id: int) -> dict:
    """Right-padded input_ids and attention_mask, both (batch, longest). The classifier pools the
    last non-pad token."""
    width = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        input_ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return {"input_ids": input_ids, "attention_mask": mask}


def classifier_kwargs(labels: list[str]) -> dict:
    return {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
            "label2id": {lab: i for i, lab in enumerate(labels)}, "dtype": torch.float32}


def set_pad(model, pad_id: int) -> None:
    model.config.pad_token_id = pad_id
    text_cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    text_cfg.pad_token_id = pad_id


def load_head(run_dir: str | Path, device: str | torch.device | None = None):
    """(model in eval mode, tokenizer, labels, max_length) of a head run."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

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

        base = adapter_base(meta, model_dir)
        model = AutoModelForSequenceClassification.from_pretrained(base, **classifier_kwargs(labels))
        set_pad(model, tok.pad_token_id)
        model = PeftModel.from_pretrained(model, model_dir)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32)
        if model.config.pad_token_id is None:
            set_pad(model, tok.pad_token_id)
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(dev).eval()
    return model, tok, labels, int(meta.get("max_length") or 512)


def adapter_base(meta: dict, model_dir: Path) -> str:
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
def predict_probs(model, tok, texts: list[str], max_length: int, batch_size: int = 16) -> torch.Tensor:
    """Class probabilities, (len(texts), n_labels) float32, in the input order."""
    ids, _ = encode_texts(tok, list(texts), max_length)
    n_labels = model.config.num_labels
    out = torch.zeros((len(ids), n_labels), dtype=torch.float32)
    if not ids:
        return out
    device = next(model.parameters()).device
    # Similar lengths together: less padding; rows go back to the input order.
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    for i in range(0, len(order), batch_size):
        chunk = order[i : i + batch_size]
        batch = {k: v.to(device) for k, v in collate_ids([ids[j] for j in chunk], tok.pad_token_id).items()}
        probs = model(**batch).logits.float().softmax(-1).cpu()  # (chunk, n_labels)
        out[chunk] = probs
    return out
