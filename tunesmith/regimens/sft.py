"""Supervised fine-tuning: train a causal LM on prompt/answer pairs or chat conversations.

One `train()` from data to exported model: load and check data, prepare the run directory,
load the model and mark what trains (LoRA, full, freeze), pack the examples, then the loop
(gradient accumulation, clipping, warm-up + decay, validation, early stopping, atomic
checkpoints that resume exactly), and finally export the best or last weights to `model/`.
Under torchrun each rank computes its share of every step's rows (training/distributed.py);
rank 0 alone writes the run directory.
"""

from __future__ import annotations

import time

import torch

from tunesmith.data.schemas import load_dataset
from tunesmith.data.packing import batches, collate
from tunesmith.data.splits import split_rows
from tunesmith.data.templating import encode_rows
from tunesmith.errors import TunesmithError
from tunesmith.runs import start_run, update_run
from tunesmith.training import checkpoint as ckpt
from tunesmith.training import distributed as dist
from tunesmith.training.batching import batch_order, count_targets, make_rows, mean_loss
from tunesmith.training.adapters import load_trainable, save_model
from tunesmith.training.losses import causal_lm_loss, check_finite_loss
from tunesmith.training.progress import TrainLogger
from tunesmith.training.runtime import autocast, prepare_runtime, to_device
from tunesmith.training.optim import build_optimizer, step_budget
from tunesmith.training.selection import common_summary, load_best_for_export, record_evaluation

ACCEPTS = ("prompt_completion", "messages")


def _load_data(cfg):
    """Read and validate train (and validation) data before anything heavy happens."""
    train_ds = load_dataset(cfg.data.train, cfg.data.type, accept=ACCEPTS)
    if cfg.data.validation:
        val_ds = load_dataset(cfg.data.validation, cfg.data.type or train_ds.type, accept=ACCEPTS)
        return train_ds, train_ds.rows(), val_ds.rows()
    tr, va = split_rows(train_ds.rows(), cfg.data.val_fraction, cfg.seed)
    return train_ds, tr, va


@torch.no_grad()
def validation_exact_match(model, tok, rows: list[dict], dtype: str, cfg) -> float:
    """Share of validation examples whose greedy answer matches the last assistant turn."""
    from tunesmith.data.templating import to_messages
    from tunesmith.eval.metrics import exact_match
    from tunesmith.generation import GenerationSettings, generate_batch

    convs, refs = [], []
    for r in rows:
        msgs = to_messages(r, dtype, cfg.data.system_prompt)
        last = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
        convs.append(msgs[:last])
        refs.append(msgs[last]["content"])
    longest = max(len(tok(x)["input_ids"]) for x in refs)
    preds = generate_batch(model, tok, convs, GenerationSettings(max_new_tokens=longest + 8), batch_size=cfg.training.batch_size * 4)
    model.train()
    return sum(exact_match(p, [y]) for p, y in zip(preds, refs)) / max(len(refs), 1)


def train(cfg, *, resume: bool = False, overwrite: bool = False, progress: bool = True) -> dict:
    t0 = time.time()
    tc = cfg.training
    train_ds, train_rows, val_rows_raw = _load_data(cfg)
    run = cfg.run_dir
    if dist.is_main():
        start_run(cfg, regimen="sft", files={"train": cfg.data.train, "validation": cfg.data.validation},
                  counts={"train": len(train_rows), "validation": len(val_rows_raw)},
                  data_info={"type": train_ds.type, "layout": train_ds.layout}, resume=resume, overwrite=overwrite)
        update_run(run, adapter=cfg.adapter.mode, data_type=train_ds.type, **dist.record())
    dist.barrier()  # the run directory exists before any rank reads its checkpoints

    # Model, trainable parameters and device.
    device, precision = prepare_runtime(cfg.seed, tc)
    model, tok, _, n_trainable, n_total = load_trainable(cfg, device, precision=precision)

    # Data -> token ids with the loss mask -> packed rows.
    enc = dict(max_length=cfg.data.max_length, system_prompt=cfg.data.system_prompt, loss_on=cfg.data.loss_on)
    train_ex, enc_stats = encode_rows(train_rows, train_ds.type, tok, **enc)
    val_ex, _ = encode_rows(val_rows_raw, train_ds.type, tok, **enc)
    rows, val_rows = make_rows(train_ex, cfg.data.max_length, cfg.data.packing), make_rows(val_ex, cfg.data.max_length, cfg.data.packing)
    if not rows:
        raise TunesmithError(f"{cfg.data.train}: no trainable examples left after encoding (every answer is empty or past data.max_length={cfg.data.max_length})")
    pad_id = tok.pad_token_id
    steps_per_epoch, total_steps = step_budget(len(rows), tc)
    net = dist.wrap(model)  # before the optimizer: FSDP replaces the parameters by shards
    dist.seed_rank(cfg.seed)
    params, optimizer, scheduler = build_optimizer(model, tc, total_steps)

    # Loop state; on resume it comes back from the latest checkpoint with every RNG.
    loop = {"step": 0, "epoch": 0, "micro": 0, "best_val": None, "best_step": None, "bad_evals": 0,
            "tokens": 0, "train_s": 0.0, "last_loss": None, "stopped_early": False}
    restored = ckpt.resume_latest(run / "checkpoints", model=model, optimizer=optimizer, scheduler=scheduler) if resume else None
    if restored is not None:
        loop = restored
    log = TrainLogger(run, total_steps, loop["step"] if resume else None, enabled=progress)
    log.header(f"sft {cfg.adapter.mode} | {n_trainable:,} of {n_total:,} params trained | {len(rows)} rows of "
               f"{len(train_ex)} examples | {total_steps} steps | {device.type} {precision}")

    def save(best: bool = False):
        ckpt.save_checkpoint(run / "checkpoints", loop["step"], model=model, optimizer=optimizer,
                             scheduler=scheduler, loop_state=loop, keep=tc.keep_checkpoints, best=best)

    while loop["step"] < total_steps and not loop["stopped_early"]:
        epoch_batches = batches(rows, tc.batch_size, batch_order(rows, tc.batch_size, cfg.seed, loop["epoch"], cfg.data.group_by_length))
        group = epoch_batches[loop["micro"] : loop["micro"] + tc.gradient_accumulation_steps]
        t_step = time.time()
        n_targets = sum(count_targets(g) for g in group)  # the whole step's, on every rank
        loss_sum = 0.0
        shares = dist.shard(group)  # this rank's rows of the step (all of them for one process)
        for i, (mb, weight) in enumerate(shares):
            batch = to_device(collate(mb, pad_id), device)
            # Several processes: gradients are reduced once, after the step's last micro-batch
            # (DDP's no_sync before it), and `weigh` makes the ranks' reduced gradient their sum.
            with dist.accumulating(net, last=i == len(shares) - 1):
                with autocast(device, precision):
                    s, _ = net(causal_lm_loss, batch)
                # Divide by the whole step's token count: every trained token weighs the same.
                dist.weigh(s / max(n_targets, 1), weight).backward()
            loss_sum += s.item() * weight
        loss_sum = dist.all_sum(loss_sum)
        check_finite_loss(loss_sum, loop["step"] + 1)
        grad_norm = dist.clip_grad_norm(params, tc.max_grad_norm)
        lr_now = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        n_tokens = sum(len(r) for g in group for r in g)
        dt = time.time() - t_step
        loop["micro"] += len(group)
        loop["step"] += 1
        loop["tokens"] += n_tokens
        loop["train_s"] += dt
        loop["last_loss"] = loss_sum / max(n_targets, 1)
        if loop["micro"] >= len(epoch_batches):
            loop["epoch"], loop["micro"] = loop["epoch"] + 1, 0
        log.step({"step": loop["step"], "epoch": round(loop["step"] / steps_per_epoch, 4), "loss": loop["last_loss"],
                  "lr": lr_now, "grad_norm": float(grad_norm), "tokens_per_s": n_tokens / max(dt, 1e-9), "tokens": loop["tokens"]})

        is_last = loop["step"] >= total_steps
        improved = False
        if val_rows and (loop["step"] % tc.eval_every == 0 or is_last):
            val = {"val_loss": dist.evaluate(net, mean_loss, val_rows, batch_size=tc.batch_size, pad_id=pad_id, device=device, precision=precision)}
            if tc.select_metric == "exact_match":
                val["val_exact_match"] = dist.evaluate(net, validation_exact_match, tok, val_rows_raw, train_ds.type, cfg)
            # Loss improves downwards, exact match upwards; best_val holds the selection metric.
            value = val["val_loss"] if tc.select_metric == "val_loss" else val["val_exact_match"]
            improved = record_evaluation(loop, value, higher_is_better=tc.select_metric != "val_loss", min_delta=tc.early_stopping_min_delta,
                                         patience=tc.early_stopping_patience, total_steps=total_steps, metrics=val)
            log.validation(loop["step"], val, tc.select_metric, loop["best_val"])
        if improved or is_last or loop["stopped_early"] or loop["step"] % tc.save_every == 0:
            save(best=improved)
    log.close()

    # Export: the best checkpoint by validation loss, or the last weights.
    exported = load_best_for_export(run, model, tc.load_best)
    whole = dist.full_state_dict(model)  # FSDP: every rank sends its shards to rank 0
    if dist.is_main():
        save_model(model, tok, run / "model", state_dict=whole)
    summary = {
        **common_summary(loop, t0=t0, n_trainable=n_trainable, n_total=n_total, device=device, precision=precision, exported=exported),
        "best_val_loss": loop["best_val"] if tc.select_metric == "val_loss" else None,
        "select_metric": tc.select_metric,
        "best_metric": loop["best_val"],
        "encoding": enc_stats,
        "system_prompt": cfg.data.system_prompt,
    }
    if dist.is_main():
        update_run(run, **summary)
    return {"run_dir": str(run), **summary}
