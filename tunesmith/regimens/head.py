"""Classification head: repurpose the LLM as a classifier (text -> one of a fixed label set).

One `train()` from data to exported model: load and check the classification data (and fix the
label order) before anything heavy, prepare the run directory, build transformers' sequence
classification model for the architecture (it pools the last non-pad token through a new
linear `score` layer), mark what trains (`head.train`: the head only, the head plus LoRA
adapters, or everything), then the loop (gradient accumulation, clipping, warm-up + decay,
validation loss and accuracy, early stopping, atomic checkpoints that resume exactly) with a
cross-entropy loss weighted by inverse class frequency, and finally export the best or last
weights to `model/` (transformers alone loads it; peft too for LoRA) with `model/labels.json`.

Inputs are the raw texts (no chat template, no system prompt), tokenized with the model's own
tokenizer and truncated to `data.max_length` tokens; `tunesmith.eval.head_eval` scores the
exported model the same way.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F

from tunesmith.atomic import write_json_atomic
from tunesmith.data.packing import batches
from tunesmith.data.schemas import load_dataset
from tunesmith.data.splits import split_rows
from tunesmith.errors import ConfigError, TunesmithError
from tunesmith.models.classifier import LABELS_FILE, classifier_kwargs as _classifier_kwargs, collate_ids, encode_texts, set_pad as _set_pad  # noqa: F401 - re-exported
from tunesmith.runs import start_run, update_run
from tunesmith.training import checkpoint as ckpt
from tunesmith.training import distributed as dist
from tunesmith.training.losses import check_finite_loss
from tunesmith.training.adapters import apply_adapter, count_params, save_model
from tunesmith.training.batching import epoch_order
from tunesmith.training.progress import TrainLogger
from tunesmith.training.runtime import autocast, prepare_runtime, to_device
from tunesmith.training.optim import build_optimizer, step_budget
from tunesmith.training.selection import common_summary, load_best_for_export, record_evaluation

ACCEPTS = ("classification",)
HEAD_MODULE = "score"  # transformers' name for the sequence-classification output layer


# --------------------------------------------------------------------------- pure helpers

def label_order(rows: list[dict]) -> list[str]:
    """The label set in a fixed order (sorted), so that class index i means the same in every run."""
    return sorted({r["label"] for r in rows})


def class_weights(targets: list[int], n_classes: int) -> list[float]:
    """Inverse-frequency weights normalised so that the mean weight over the training examples is 1:
    w_c = N / (K * n_c), K the number of classes present. A class absent from `targets` gets weight 0
    (it has no examples to weigh; cannot happen in train(), whose labels come from the training data)."""
    counts = Counter(targets)
    n, k = len(targets), sum(1 for c in range(n_classes) if counts[c])
    return [n / (k * counts[c]) if counts[c] else 0.0 for c in range(n_classes)]






def head_loss(logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None) -> tuple[torch.Tensor, float]:
    """Summed (class-weighted) cross-entropy and the summed weight of the examples: divide the first
    by the second over a whole optimizer step to get the weighted mean that F.cross_entropy gives."""
    s = F.cross_entropy(logits.float(), targets, weight=weight, reduction="sum")
    denom = float(weight[targets].sum()) if weight is not None else float(targets.numel())
    return s, denom


@torch.no_grad()
def evaluate_split(model, examples: list[tuple[list[int], int]], *, batch_size: int, pad_id: int, device,
                   precision: str, weight: torch.Tensor | None) -> dict:
    """Validation loss (the training objective, class-weighted when training is) and accuracy."""
    model.eval()
    total, denom, correct = 0.0, 0.0, 0
    for i in range(0, len(examples), batch_size):
        group = examples[i : i + batch_size]
        batch = to_device(collate_ids([x for x, _ in group], pad_id), device)
        y = torch.tensor([t for _, t in group], device=device)
        with autocast(device, precision):
            logits = model(**batch).logits
        s, d = head_loss(logits, y, weight)
        total, denom = total + float(s), denom + d
        correct += int((logits.argmax(-1) == y).sum())
    model.train()
    return {"val_loss": total / max(denom, 1e-12), "val_accuracy": correct / max(len(examples), 1)}






def load_classifier(spec: str, labels: list[str]):
    """(sequence-classification model, tokenizer, ref, merged) for a model spec. A spec that carries
    adapters (a LoRA run, stacked runs) is merged into a causal LM first and the classifier is built
    from those weights (`merged` is then True); the `score` layer is new (seeded by the caller)."""
    from transformers import AutoModelForSequenceClassification

    from tunesmith.models.loading import load_model, load_tokenizer, resolve_model

    ref = resolve_model(spec)
    tok = load_tokenizer(ref)
    kw = _classifier_kwargs(labels)
    merged = ref.adapter is not None or ref.base is not None
    if not merged:
        model = AutoModelForSequenceClassification.from_pretrained(ref.weights_dir, **kw)
    else:
        causal, _, _ = load_model(ref, merge_adapter=True)
        with tempfile.TemporaryDirectory(prefix="tunesmith-head-") as tmp:
            causal.save_pretrained(tmp)
            del causal
            model = AutoModelForSequenceClassification.from_pretrained(tmp, **kw)
        model.config._name_or_path = str(ref.weights_dir)  # not the deleted temporary folder
    _set_pad(model, tok.pad_token_id)
    return model, tok, ref, merged


def mark_trainable(model, cfg):
    """head.train: "head" (only `score`), "lora" (`score` + LoRA adapters via peft, SEQ_CLS: peft
    keeps `score` trainable and saved as a module to save) or "full" (everything)."""
    mode = cfg.head.train
    if mode == "lora":
        model = apply_adapter(model, dataclasses.replace(cfg.adapter, mode="lora"), task_type="SEQ_CLS")
        heads = [n for n, p in model.named_parameters() if p.requires_grad and f".{HEAD_MODULE}." in n]
        if not heads:  # peft names `score` for SEQ_CLS itself; make sure it did
            raise TunesmithError("head.train=lora: peft did not mark the classification head as trainable")
        return model
    if mode == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    if mode == "head":
        for p in model.parameters():
            p.requires_grad_(False)
        for p in getattr(model, HEAD_MODULE).parameters():
            p.requires_grad_(True)
        return model
    raise ConfigError(f"head.train: unknown mode {mode!r}")


# --------------------------------------------------------------------------- data and checks

def _load_data(cfg):
    """Read and validate train (and validation) data before anything heavy happens."""
    train_ds = load_dataset(cfg.data.train, cfg.data.type, accept=ACCEPTS)
    if cfg.data.validation:
        val_ds = load_dataset(cfg.data.validation, cfg.data.type or train_ds.type, accept=ACCEPTS)
        return train_ds, train_ds.rows(), val_ds.rows()
    tr, va = split_rows(train_ds.rows(), cfg.data.val_fraction, cfg.seed)
    return train_ds, tr, va


def _check_config(cfg) -> None:
    if cfg.training.select_metric != "val_loss":
        raise ConfigError(f"training.select_metric: {cfg.training.select_metric} applies to generative regimens; "
                          "the head regimen selects checkpoints by val_loss (set training.select_metric=val_loss)")
    start = Path(cfg.start_model)
    if (start / "run.json").exists():
        meta = json.loads((start / "run.json").read_text())
        if meta.get("regimen") == "head":
            raise TunesmithError(f"{start}: a classification-head run cannot be a starting model; start from its base "
                                 f"({meta.get('base_model')}) or from a causal-LM run")


# --------------------------------------------------------------------------- train

def _logits(model, batch: dict) -> torch.Tensor:
    return model(**batch).logits


def train(cfg, *, resume: bool = False, overwrite: bool = False, progress: bool = True) -> dict:
    t0 = time.time()
    tc = cfg.training
    _check_config(cfg)
    train_ds, train_rows, val_rows_raw = _load_data(cfg)
    labels = label_order(train_rows)
    if len(labels) < 2:
        raise TunesmithError(f"{cfg.data.train}: a classifier needs at least two labels, found {labels}")
    unseen = sorted({r["label"] for r in val_rows_raw} - set(labels))
    if unseen:
        raise TunesmithError(f"{cfg.data.validation}: labels {unseen} never occur in the training data "
                             f"(training labels: {', '.join(labels)})")
    label_id = {lab: i for i, lab in enumerate(labels)}
    train_y = [label_id[r["label"]] for r in train_rows]
    val_y = [label_id[r["label"]] for r in val_rows_raw]
    weights = class_weights(train_y, len(labels)) if cfg.head.class_weights else None

    run = cfg.run_dir
    if dist.is_main():  # under torchrun rank 0 alone writes the run directory
        start_run(cfg, regimen="head", files={"train": cfg.data.train, "validation": cfg.data.validation},
                  counts={"train": len(train_rows), "validation": len(val_rows_raw)},
                  data_info={"type": train_ds.type, "layout": train_ds.layout,
                             "label_counts": dict(sorted(Counter(r["label"] for r in train_rows).items()))},
                  resume=resume, overwrite=overwrite)
        update_run(run, task="classification", labels=labels, head_train=cfg.head.train, data_type=train_ds.type,
                   adapter=cfg.head.train, class_weights=weights, max_length=cfg.data.max_length, **dist.record())
    dist.barrier()

    # Model, trainable parameters and device; the seed fixes the new head's initialisation.
    device, precision = prepare_runtime(cfg.seed, tc)
    model, tok, _, merged_start = load_classifier(cfg.start_model, labels)
    model = mark_trainable(model, cfg).to(device)
    model.train()
    n_trainable, n_total = count_params(model)
    weight_t = torch.tensor(weights, dtype=torch.float32, device=device) if weights is not None else None

    # Texts -> token ids.
    train_ids, enc_stats = encode_texts(tok, [r["text"] for r in train_rows], cfg.data.max_length)
    val_ids, _ = encode_texts(tok, [r["text"] for r in val_rows_raw], cfg.data.max_length)
    examples = list(zip(train_ids, train_y))
    val_examples = list(zip(val_ids, val_y))
    if not examples:
        raise RuntimeError("no training examples")
    pad_id = tok.pad_token_id
    steps_per_epoch, total_steps = step_budget(len(examples), tc)
    net = dist.wrap(model)  # DDP under torchrun (head has no FSDP)
    dist.seed_rank(cfg.seed)
    params, optimizer, scheduler = build_optimizer(model, tc, total_steps)

    # Loop state; on resume it comes back from the latest checkpoint with every RNG.
    loop = {"step": 0, "epoch": 0, "micro": 0, "best_val": None, "best_step": None, "bad_evals": 0,
            "tokens": 0, "train_s": 0.0, "last_loss": None, "stopped_early": False,
            "best_val_accuracy": None, "last_val": None}
    restored = ckpt.resume_latest(run / "checkpoints", model=model, optimizer=optimizer, scheduler=scheduler) if resume else None
    if restored is not None:
        loop = restored
    log = TrainLogger(run, total_steps, loop["step"] if resume else None, enabled=progress)
    log.header(f"head ({cfg.head.train}) | {len(labels)} labels | {n_trainable:,} of {n_total:,} params trained | "
               f"{len(examples)} examples | {total_steps} steps | {device.type} {precision}")

    def save(best: bool = False):
        ckpt.save_checkpoint(run / "checkpoints", loop["step"], model=model, optimizer=optimizer,
                             scheduler=scheduler, loop_state=loop, keep=tc.keep_checkpoints, best=best)

    while loop["step"] < total_steps and not loop["stopped_early"]:
        epoch_batches = batches(examples, tc.batch_size, epoch_order(len(examples), cfg.seed, loop["epoch"]))
        group = epoch_batches[loop["micro"] : loop["micro"] + tc.gradient_accumulation_steps]
        t_step = time.time()
        # Divide by the whole step's summed example weight: the weighted mean over the step,
        # however its examples fall into micro-batches.
        denom = sum(weights[t] if weights is not None else 1.0 for mb in group for _, t in mb)  # the whole step's
        loss_sum = 0.0
        shares = dist.shard(group)  # this rank's examples of the step (all of them for one process)
        for i, (mb, weight) in enumerate(shares):
            batch = to_device(collate_ids([x for x, _ in mb], pad_id), device)
            y = torch.tensor([t for _, t in mb], device=device)
            with dist.accumulating(net, last=i == len(shares) - 1):
                with autocast(device, precision):
                    logits = net(_logits, batch)
                s, _ = head_loss(logits, y, weight_t)
                dist.weigh(s / max(denom, 1e-12), weight).backward()
            loss_sum += s.item() * weight
        loss_sum = dist.all_sum(loss_sum)
        check_finite_loss(loss_sum, loop["step"] + 1)
        grad_norm = dist.clip_grad_norm(params, tc.max_grad_norm)
        lr_now = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        n_tokens = sum(len(x) for mb in group for x, _ in mb)
        dt = time.time() - t_step
        loop["micro"] += len(group)
        loop["step"] += 1
        loop["tokens"] += n_tokens
        loop["train_s"] += dt
        loop["last_loss"] = loss_sum / max(denom, 1e-12)
        if loop["micro"] >= len(epoch_batches):
            loop["epoch"], loop["micro"] = loop["epoch"] + 1, 0
        log.step({"step": loop["step"], "epoch": round(loop["step"] / steps_per_epoch, 4), "loss": loop["last_loss"],
                  "lr": lr_now, "grad_norm": float(grad_norm), "tokens_per_s": n_tokens / max(dt, 1e-9), "tokens": loop["tokens"]})

        is_last = loop["step"] >= total_steps
        improved = False
        if val_examples and (loop["step"] % tc.eval_every == 0 or is_last):
            val = dist.evaluate(net, evaluate_split, val_examples, batch_size=tc.batch_size, pad_id=pad_id, device=device,
                                precision=precision, weight=weight_t)
            loop["last_val"] = val
            improved = record_evaluation(loop, val["val_loss"], higher_is_better=False, min_delta=tc.early_stopping_min_delta,
                                         patience=tc.early_stopping_patience, total_steps=total_steps, metrics=val)
            if improved:
                loop["best_val_accuracy"] = val["val_accuracy"]
            log.validation(loop["step"], val, "val_loss", loop["best_val"])
        if improved or is_last or loop["stopped_early"] or loop["step"] % tc.save_every == 0:
            save(best=improved)
    log.close()

    # Export: the best checkpoint by validation loss, or the last weights.
    exported = load_best_for_export(run, model, tc.load_best)
    export_format = "full"
    if not dist.is_main():  # rank 0 exports
        return {"run_dir": str(run)}
    if cfg.head.train == "lora":
        if merged_start:
            # The starting weights exist only merged in memory: an adapter over the plain base would
            # not reproduce them, so the export is the merged classifier (transformers alone loads it).
            model = model.merge_and_unload()
        else:
            export_format = "adapter"
    model = model.to("cpu")
    save_model(model, tok, run / "model")
    write_json_atomic(run / "model" / LABELS_FILE, labels)
    last_val = loop.get("last_val") or {}
    summary = {
        **common_summary(loop, t0=t0, n_trainable=n_trainable, n_total=n_total, device=device, precision=precision, exported=exported),
        "best_val_loss": loop["best_val"],
        "select_metric": "val_loss",
        "best_metric": loop["best_val"],
        "encoding": enc_stats,
        "system_prompt": None,
        "best_val_accuracy": loop.get("best_val_accuracy"),
        "final_val_accuracy": last_val.get("val_accuracy"),
        "export_format": export_format,
    }
    update_run(run, **summary)
    return {"run_dir": str(run), **summary}
