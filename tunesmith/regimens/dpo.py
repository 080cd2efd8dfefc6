"""Direct Preference Optimization: train on (prompt, chosen, rejected) pairs so that the model
prefers the chosen answer more than the reference (its starting point) did.

One `train()` from data to exported model, the same shape as sft: load and check the
preference data, prepare the run directory, load the model and mark what trains (LoRA, full,
freeze), render each pair as two conversations (prompt + chosen, prompt + rejected, the answer
as the last assistant turn and the only trained tokens), compute the reference log-probs once,
then the loop (gradient accumulation, clipping, warm-up + decay, validation, early stopping,
atomic checkpoints that resume exactly), and finally export the best or last weights.

Losses (`dpo.loss`, see training.pref_losses.dpo_loss): "sigmoid" (DPO), "ipo" (on
length-averaged log-probs) and the reference-free "simpo". Pairs are never packed
(data.packing is ignored) and only the answer is trained (data.loss_on is ignored).

The reference: log-probs of every training and validation pair under the starting model,
computed once before the first step and cached in memory and in the run directory
(`ref_logprobs.safetensors`, keyed by a fingerprint of the encoded pairs, the start model and
the precision), so that a resumed run does not recompute them. With LoRA the reference is the
same model with its adapter disabled (no second copy in memory); with full or freeze
fine-tuning it is the untouched model before the first step. SimPO needs no reference.

Logged per step: loss, reward_chosen, reward_rejected, reward_margin, reward_accuracy (batch
means, as dpo_loss defines them). Validation: the loss, and preference accuracy (share of
pairs whose log-prob ratio margin (pc - rc) - (pr - rr) is > 0; SimPO: pc > pr). The best
checkpoint is the one with the lowest validation loss.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import torch

from tunesmith.data.schemas import load_dataset
from tunesmith.data.splits import split_rows
from tunesmith.errors import ConfigError, TunesmithError
from tunesmith.eval.preference import encode_pairs, pair_batch, pair_lengths, pair_logprobs, pair_rows
from tunesmith.runs import start_run, update_run
from tunesmith.training import checkpoint as ckpt
from tunesmith.training import distributed as dist
from tunesmith.training.adapters import is_lora, load_trainable, save_model
from tunesmith.training.batching import epoch_order
from tunesmith.training.losses import check_finite_loss, sequence_logprobs
from tunesmith.training.pref_losses import dpo_loss
from tunesmith.training.progress import TrainLogger
from tunesmith.training.runtime import autocast, prepare_runtime, to_device
from tunesmith.training.optim import build_optimizer, step_budget
from tunesmith.training.selection import common_summary, load_best_for_export, record_evaluation

ACCEPTS = ("preference",)
REF_FILE = "ref_logprobs.safetensors"
REWARD_KEYS = ("reward_chosen", "reward_rejected", "reward_margin", "reward_accuracy")


def _check_config(cfg) -> None:
    """Options dpo cannot honour, refused before any data or model is read."""
    d = cfg.dpo
    if d.beta <= 0:
        raise ConfigError(f"dpo.beta: must be > 0, got {d.beta}")
    if d.label_smoothing >= 0.5:
        raise ConfigError(f"dpo.label_smoothing: must be below 0.5, got {d.label_smoothing}")
    if d.loss == "ipo" and d.label_smoothing:
        raise ConfigError("dpo.label_smoothing: not defined for dpo.loss ipo; set it to 0")
    if cfg.training.select_metric != "val_loss":
        raise ConfigError("training.select_metric: dpo selects checkpoints by val_loss (exact_match needs an answer to match)")


def _load_data(cfg):
    """Read and validate train (and validation) pairs before anything heavy happens."""
    train_ds = load_dataset(cfg.data.train, cfg.data.type, accept=ACCEPTS)
    if cfg.data.validation:
        val_ds = load_dataset(cfg.data.validation, cfg.data.type or train_ds.type, accept=ACCEPTS)
        return train_ds, train_ds.rows(), val_ds.rows()
    tr, va = split_rows(train_ds.rows(), cfg.data.val_fraction, cfg.seed)
    return train_ds, tr, va


def preference_loss(policy_chosen, policy_rejected, ref: dict | None, idx, lengths, dcfg):
    """dpo_loss for pairs `idx` of a split: reference log-probs and lengths are picked by index."""
    t = torch.as_tensor(idx, dtype=torch.long)
    dev = policy_chosen.device
    rc = rr = None
    if ref is not None:
        rc, rr = ref["chosen"][t].to(dev), ref["rejected"][t].to(dev)
    return dpo_loss(policy_chosen, policy_rejected, rc, rr, beta=dcfg.beta, loss_type=dcfg.loss,
                    label_smoothing=dcfg.label_smoothing, chosen_len=lengths[0][t].to(dev),
                    rejected_len=lengths[1][t].to(dev), simpo_gamma=dcfg.simpo_gamma)


def preference_margins(pc, pr, ref: dict | None) -> torch.Tensor:
    """Log-prob ratio margins (pc - rc) - (pr - rr); without a reference pc - pr."""
    m = pc.double() - pr.double()
    if ref is not None:
        m = m - (ref["chosen"].double() - ref["rejected"].double())
    return m


def _fingerprint(cfg, precision: str, pairs) -> str:
    """What the reference log-probs depend on: the start model, the precision and the token ids."""
    h = hashlib.sha256(f"{cfg.start_model}|{precision}|{len(pairs)}".encode())
    for c, r in pairs:
        for ex in (c, r):
            h.update(repr((ex.input_ids, ex.labels)).encode())
    return h.hexdigest()


def _read_ref_cache(path: Path, fingerprint: str) -> dict | None:
    if not path.exists():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            if (f.metadata() or {}).get("fingerprint") != fingerprint:
                return None
            return {k: f.get_tensor(k) for k in f.keys()}
    except Exception:  # a damaged cache is recomputed, never trusted
        return None


def _write_ref_cache(path: Path, tensors: dict, fingerprint: str) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={"fingerprint": fingerprint})
    os.replace(tmp, path)


def reference_logprobs(model, pairs, *, lora: bool, pad_id: int, batch_size: int, precision: str):
    """(chosen, rejected) log-probs (N,) under the reference: the LoRA model with its adapter
    disabled, or the model as it is (call before the first step)."""
    if lora:
        with model.disable_adapter():
            return pair_logprobs(model, pairs, pad_id=pad_id, batch_size=batch_size, precision=precision)
    return pair_logprobs(model, pairs, pad_id=pad_id, batch_size=batch_size, precision=precision)


def _reference(cfg, run, model, train_pairs, val_pairs, *, pad_id: int, precision: str):
    """(train, validation) reference log-probs as {"chosen", "rejected"} dicts, and where they came
    from ("computed", "cached", or "none" for simpo), read from the run's cache when it matches.
    Under torchrun rank 0 computes (or reads) them and the other ranks read its cache file."""
    if cfg.dpo.loss == "simpo":
        return None, None, "none"
    n_pairs, source = len(train_pairs), "cached"
    fp = _fingerprint(cfg, precision, train_pairs + val_pairs)
    cached = _read_ref_cache(run / REF_FILE, fp) if dist.is_main() else None
    if cached is None and dist.is_main():
        rc, rr = reference_logprobs(model, train_pairs + val_pairs, lora=is_lora(cfg.adapter.mode),
                                    pad_id=pad_id, batch_size=cfg.training.batch_size, precision=precision)
        cached = {"train_chosen": rc[:n_pairs], "train_rejected": rr[:n_pairs],
                  "validation_chosen": rc[n_pairs:], "validation_rejected": rr[n_pairs:]}
        _write_ref_cache(run / REF_FILE, cached, fp)
        source = "computed"
    dist.barrier()  # the cache file is complete
    if not dist.is_main():
        cached = _read_ref_cache(run / REF_FILE, fp)
    return ({"chosen": cached["train_chosen"], "rejected": cached["train_rejected"]},
            {"chosen": cached["validation_chosen"], "rejected": cached["validation_rejected"]}, source)


def train(cfg, *, resume: bool = False, overwrite: bool = False, progress: bool = True) -> dict:
    t0 = time.time()
    tc, dcfg = cfg.training, cfg.dpo
    _check_config(cfg)
    train_ds, train_raw, val_raw = _load_data(cfg)
    run = cfg.run_dir
    if dist.is_main():  # under torchrun rank 0 alone writes the run directory
        start_run(cfg, regimen="dpo", files={"train": cfg.data.train, "validation": cfg.data.validation},
                  counts={"train": len(train_raw), "validation": len(val_raw)},
                  data_info={"type": train_ds.type, "layout": train_ds.layout}, resume=resume, overwrite=overwrite)
        update_run(run, adapter=cfg.adapter.mode, data_type=train_ds.type, dpo_loss=dcfg.loss, dpo_beta=dcfg.beta, **dist.record())
    dist.barrier()

    # Model, trainable parameters and device.
    device, precision = prepare_runtime(cfg.seed, tc)
    model, tok, _, n_trainable, n_total = load_trainable(cfg, device)

    # Pairs -> (chosen, rejected) examples with only the answer trained -> one row each.
    pad_id = tok.pad_token_id
    enc = dict(max_length=cfg.data.max_length, system_prompt=cfg.data.system_prompt)
    train_pairs, _, enc_stats = encode_pairs(train_raw, tok, **enc)
    val_pairs, _, _ = encode_pairs(val_raw, tok, **enc)
    if not train_pairs:
        raise TunesmithError("no preference pairs left after encoding (each side needs an answer token within data.max_length)")
    chosen_rows, rejected_rows = pair_rows(train_pairs)
    lengths, val_lengths = pair_lengths(train_pairs), pair_lengths(val_pairs)
    n_pairs = len(train_pairs)
    steps_per_epoch, total_steps = step_budget(n_pairs, tc)

    # Reference log-probs: once, before any step (and before a checkpoint's weights load).
    ref, ref_val, ref_source = _reference(cfg, run, model, train_pairs, val_pairs, pad_id=pad_id, precision=precision)

    net = dist.wrap(model)  # after the reference log-probs: FSDP shards the weights they were computed with
    dist.seed_rank(cfg.seed)
    params, optimizer, scheduler = build_optimizer(model, tc, total_steps)

    # Loop state; on resume it comes back from the latest checkpoint with every RNG.
    loop = {"step": 0, "epoch": 0, "micro": 0, "best_val": None, "best_step": None, "bad_evals": 0,
            "tokens": 0, "train_s": 0.0, "last_loss": None, "last_rewards": None, "last_val": None,
            "best_val_metrics": None, "stopped_early": False}
    restored = ckpt.resume_latest(run / "checkpoints", model=model, optimizer=optimizer, scheduler=scheduler) if resume else None
    if restored is not None:
        loop.update(restored)
    log = TrainLogger(run, total_steps, loop["step"] if resume else None, enabled=progress)
    log.header(f"dpo ({dcfg.loss}, beta {dcfg.beta}) {cfg.adapter.mode} | {n_trainable:,} of {n_total:,} params trained | "
               f"{n_pairs} pairs, {len(val_pairs)} validation | {total_steps} steps | {device.type} {precision} | "
               f"reference {ref_source}")

    def save(best: bool = False):
        ckpt.save_checkpoint(run / "checkpoints", loop["step"], model=model, optimizer=optimizer,
                             scheduler=scheduler, loop_state=loop, keep=tc.keep_checkpoints, best=best)

    def validate() -> dict:
        pc, pr = dist.evaluate(net, pair_logprobs, val_pairs, pad_id=pad_id, batch_size=tc.batch_size, precision=precision)
        loss, m = preference_loss(pc, pr, ref_val, list(range(len(val_pairs))), val_lengths, dcfg)
        acc = (preference_margins(pc, pr, ref_val) > 0).double().mean().item()
        return {"val_loss": float(loss), "val_preference_accuracy": acc,
                "val_reward_accuracy": m["reward_accuracy"], "val_reward_margin": m["reward_margin"]}

    while loop["step"] < total_steps and not loop["stopped_early"]:
        order = epoch_order(n_pairs, cfg.seed, loop["epoch"])
        epoch_batches = [order[i : i + tc.batch_size] for i in range(0, n_pairs, tc.batch_size)]
        group = epoch_batches[loop["micro"] : loop["micro"] + tc.gradient_accumulation_steps]
        t_step = time.time()
        n_group = sum(len(idx) for idx in group)  # the whole step's pairs, on every rank
        n_tokens = sum(len(chosen_rows[i]) + len(rejected_rows[i]) for idx in group for i in idx)
        loss_sum, rewards = 0.0, dict.fromkeys(REWARD_KEYS, 0.0)
        shares = dist.shard(group)  # this rank's pairs of the step (all of them for one process)
        for j, (idx, weight) in enumerate(shares):
            batch = to_device(pair_batch(chosen_rows, rejected_rows, idx, pad_id), device)
            with dist.accumulating(net, last=j == len(shares) - 1):
                with autocast(device, precision):
                    lp = net(sequence_logprobs, batch)  # (2B,): chosen answers, then rejected
                loss, m = preference_loss(lp[: len(idx)], lp[len(idx) :], ref, idx, lengths, dcfg)
                # Weight each micro-batch by its share of the step's pairs: every pair weighs the same.
                w = len(idx) / n_group * weight
                dist.weigh(loss * w).backward()
            loss_sum += loss.item() * w
            for k in REWARD_KEYS:
                rewards[k] += m[k] * w
        loss_sum = dist.all_sum(loss_sum)
        rewards = {k: dist.all_sum(v) for k, v in rewards.items()}
        check_finite_loss(loss_sum, loop["step"] + 1)
        grad_norm = dist.clip_grad_norm(params, tc.max_grad_norm)
        lr_now = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        dt = time.time() - t_step
        loop["micro"] += len(group)
        loop["step"] += 1
        loop["tokens"] += n_tokens
        loop["train_s"] += dt
        loop["last_loss"], loop["last_rewards"] = loss_sum, rewards
        if loop["micro"] >= len(epoch_batches):
            loop["epoch"], loop["micro"] = loop["epoch"] + 1, 0
        log.step({"step": loop["step"], "epoch": round(loop["step"] / steps_per_epoch, 4), "loss": loss_sum, **rewards,
                  "lr": lr_now, "grad_norm": float(grad_norm), "tokens_per_s": n_tokens / max(dt, 1e-9), "tokens": loop["tokens"]})
        if log.tb:  # TrainLogger puts loss, lr, grad norm and speed there; the rewards too
            for k in REWARD_KEYS:
                log.tb.add_scalar(f"train/{k}", rewards[k], loop["step"])

        is_last = loop["step"] >= total_steps
        improved = False
        if val_pairs and (loop["step"] % tc.eval_every == 0 or is_last):
            val = validate()
            value = val["val_loss"]
            improved = record_evaluation(loop, value, higher_is_better=False, min_delta=tc.early_stopping_min_delta,
                                         patience=tc.early_stopping_patience, total_steps=total_steps, metrics=val)
            if improved:
                loop["best_val_metrics"] = val
            loop["last_val"] = val
            log.validation(loop["step"], val, "val_loss", loop["best_val"])
        if improved or is_last or loop["stopped_early"] or loop["step"] % tc.save_every == 0:
            save(best=improved)
    log.close()

    # Export: the best checkpoint by validation loss, or the last weights.
    exported = load_best_for_export(run, model, tc.load_best)
    whole = dist.full_state_dict(model)  # FSDP: every rank sends its shards to rank 0
    if dist.is_main():
        save_model(model, tok, run / "model", state_dict=whole)
    last_rewards = loop["last_rewards"] or {}
    summary = {
        **common_summary(loop, t0=t0, n_trainable=n_trainable, n_total=n_total, device=device, precision=precision, exported=exported),
        "best_val_loss": loop["best_val"],
        "select_metric": "val_loss",
        "best_metric": loop["best_val"],
        "encoding": enc_stats,
        "system_prompt": cfg.data.system_prompt,
        "dpo": {"loss": dcfg.loss, "beta": dcfg.beta, "label_smoothing": dcfg.label_smoothing, "simpo_gamma": dcfg.simpo_gamma},
        "reference": ref_source,
        "pairs": {"train": n_pairs, "validation": len(val_pairs)},
        "final_reward_accuracy": last_rewards.get("reward_accuracy"),
        "final_reward_margin": last_rewards.get("reward_margin"),
        "final_validation": loop["last_val"],
        "best_validation": loop["best_val_metrics"],
    }
    if dist.is_main():
        update_run(run, **summary)
    return {"run_dir": str(run), **summary}
