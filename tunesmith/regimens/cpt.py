"""Continued pre-training: train a causal LM on raw domain text, every token a target.

One `train()` from data to exported model, in the same order as sft: load and check the text
before anything heavy happens, prepare the run directory, load the model (a plain model or
another run's output, `init_from`) and mark what trains (LoRA, full, freeze), then

- tokenize each document (`render_text`: BOS where the tokenizer adds one, EOS at the end) and
  cut documents longer than `data.max_length` into windows (`split_windows`), so that no part
  of the corpus is truncated away;
- optionally mix in general text to limit forgetting (`cpt.general_share`: the share of the
  trained tokens that come from general text, sampled deterministically by `sample_general`);
- pack the windows into `data.max_length` rows (documents stay isolated) and run the same
  resumable loop as sft (accumulation, clipping, warm-up + decay, validation loss on held-out
  domain documents, early stopping, atomic checkpoints), then export to `model/`.

"Continued pre-training, then SFT" is two chained runs: an sft config with
`init_from: runs/<cpt run>` starts from this run's exported model (see examples/cpt-then-sft.yaml).
Under torchrun each rank computes its share of every step's rows, as in sft.
"""

from __future__ import annotations

import random
import time


from tunesmith.data.packing import batches, collate
from tunesmith.data.schemas import load_dataset
from tunesmith.data.splits import split_rows
from tunesmith.data.templating import Example, render_text
from tunesmith.errors import ConfigError, TunesmithError
from tunesmith.runs import start_run, update_run
from tunesmith.training import checkpoint as ckpt
from tunesmith.training import distributed as dist
from tunesmith.training.adapters import load_trainable, save_model
from tunesmith.training.batching import count_targets, epoch_order, make_rows, mean_loss
from tunesmith.training.losses import causal_lm_loss, check_finite_loss
from tunesmith.training.progress import TrainLogger
from tunesmith.training.runtime import autocast, prepare_runtime, to_device
from tunesmith.training.optim import build_optimizer, step_budget
from tunesmith.training.selection import common_summary, load_best_for_export, record_evaluation

ACCEPTS = ("text",)


# --- pure helpers ---------------------------------------------------------------------------

def n_targets(ex: Example) -> int:
    """Tokens of one document (or window) that are trained once packed: all but the first, which
    packing never makes a target (it would be predicted from the previous document)."""
    return max(len(ex.input_ids) - 1, 0)


def split_windows(ex: Example, max_length: int) -> list[Example]:
    """Cut a document into windows of at most `max_length` tokens, consecutive windows sharing
    one token: the last token of a window is the first (context-only) token of the next, so
    every token of the document after its first is a target exactly once.

    A document of n tokens gives 1 window when n <= max_length, else
    ceil((n - 1) / (max_length - 1)) windows.
    """
    if max_length < 2:
        raise ValueError("max_length must be at least 2")
    n = len(ex.input_ids)
    if n <= max_length:
        return [ex]
    stride = max_length - 1
    out = []
    for start in range(0, n - 1, stride):
        end = min(start + max_length, n)
        out.append(Example(ex.input_ids[start:end], ex.labels[start:end]))
    return out


def encode_documents(rows: list[dict], tok, max_length: int) -> tuple[list[Example], dict]:
    """Tokenize text records and split long ones into windows; nothing is truncated."""
    out, stats = [], {"n": len(rows), "windows": 0, "split": 0, "truncated": 0, "dropped": 0}
    for row in rows:
        wins = [w for w in split_windows(render_text(tok, row["text"]), max_length) if n_targets(w) > 0]
        if not wins:
            stats["dropped"] += 1
            continue
        stats["split"] += len(wins) > 1
        out += wins
    stats["windows"] = len(out)
    return out, stats


def sample_general(general: list[Example], domain_targets: int, share: float, seed: int) -> list[Example]:
    """General-text windows that make up `share` of all trained tokens next to `domain_targets`
    domain tokens: whole windows in a seeded order, a fresh seeded order for each pass through
    the general set (it is repeated when the target needs more), and the last one cut so that
    the total lands on the target token count."""
    if share <= 0 or not general or domain_targets <= 0:
        return []
    target = round(share / (1.0 - share) * domain_targets)
    picked, have, passes = [], 0, 0
    while have < target:
        order = list(range(len(general)))
        random.Random(seed * 1_000_003 + passes).shuffle(order)
        passes += 1
        for i in order:
            ex, need = general[i], target - have
            if need <= 0:
                break
            if n_targets(ex) > need:  # a prefix with exactly `need` targets
                ex = Example(ex.input_ids[: need + 1], ex.labels[: need + 1])
            picked.append(ex)
            have += n_targets(ex)
    return picked


# --- the regimen ----------------------------------------------------------------------------

def _load_data(cfg):
    """Read and validate the domain text (and the general text to mix in) before anything heavy."""
    if cfg.training.select_metric != "val_loss":
        raise ConfigError(f"training.select_metric: '{cfg.training.select_metric}' needs question/answer data; "
                          "continued pre-training on raw text selects by val_loss")
    train_ds = load_dataset(cfg.data.train, cfg.data.type, accept=ACCEPTS)
    if cfg.data.validation:
        val_ds = load_dataset(cfg.data.validation, cfg.data.type or train_ds.type, accept=ACCEPTS)
        tr, va = train_ds.rows(), val_ds.rows()
    else:
        tr, va = split_rows(train_ds.rows(), cfg.data.val_fraction, cfg.seed)
    general = None
    if cfg.cpt.general_share > 0:
        if cfg.cpt.general_text:
            general = load_dataset(cfg.cpt.general_text, "text").rows()
        else:
            from tunesmith.resources import load_resource

            general = load_resource("general_text")
    return train_ds, tr, va, general


def train(cfg, *, resume: bool = False, overwrite: bool = False, progress: bool = True) -> dict:
    t0 = time.time()
    tc = cfg.training
    train_ds, train_docs, val_docs, general_docs = _load_data(cfg)
    counts = {"train": len(train_docs), "validation": len(val_docs)}
    data_info = {"type": train_ds.type, "layout": train_ds.layout}
    if general_docs is not None:
        counts["general"] = len(general_docs)
        data_info["general_source"] = cfg.cpt.general_text or "tunesmith.resources:general_text"
    run = cfg.run_dir
    if dist.is_main():  # under torchrun rank 0 alone writes the run directory
        start_run(cfg, regimen="cpt", files={"train": cfg.data.train, "validation": cfg.data.validation,
                                             "general_text": cfg.cpt.general_text if general_docs is not None else None},
                  counts=counts, data_info=data_info, resume=resume, overwrite=overwrite)
        update_run(run, adapter=cfg.adapter.mode, data_type=train_ds.type, **dist.record())
    dist.barrier()  # the run directory exists before any rank reads its checkpoints

    # Model, trainable parameters and device.
    device, precision = prepare_runtime(cfg.seed, tc)
    model, tok, _, n_trainable, n_total = load_trainable(cfg, device, precision=precision)

    # Documents -> token ids (every token trained) -> windows -> general mix -> packed rows.
    L = cfg.data.max_length
    domain_ex, enc_stats = encode_documents(train_docs, tok, L)
    val_ex, _ = encode_documents(val_docs, tok, L)
    domain_targets = sum(n_targets(x) for x in domain_ex)
    general_ex = []
    if general_docs is not None:
        general_pool, _ = encode_documents(general_docs, tok, L)
        general_ex = sample_general(general_pool, domain_targets, cfg.cpt.general_share, cfg.seed)
    general_targets = sum(n_targets(x) for x in general_ex)
    # Packed separately so that each row is all domain or all general: the loop counts the
    # general share it actually trained.
    domain_rows = make_rows(domain_ex, L, cfg.data.packing)
    general_rows = make_rows(general_ex, L, cfg.data.packing)
    rows, is_general = domain_rows + general_rows, [False] * len(domain_rows) + [True] * len(general_rows)
    val_rows = make_rows(val_ex, L, cfg.data.packing)
    if not domain_rows:
        raise TunesmithError(f"{cfg.data.train}: no trainable text left after encoding (every document is empty)")
    mix = {"general_share_target": cfg.cpt.general_share,
           "general_share_epoch": round(general_targets / max(domain_targets + general_targets, 1), 4),
           "domain_tokens_epoch": domain_targets, "general_tokens_epoch": general_targets,
           "general_windows": len(general_ex)}
    pad_id = tok.pad_token_id
    steps_per_epoch, total_steps = step_budget(len(rows), tc)
    net = dist.wrap(model)  # before the optimizer: FSDP replaces the parameters by shards
    dist.seed_rank(cfg.seed)
    params, optimizer, scheduler = build_optimizer(model, tc, total_steps)

    # Loop state; on resume it comes back from the latest checkpoint with every RNG.
    loop = {"step": 0, "epoch": 0, "micro": 0, "best_val": None, "best_step": None, "bad_evals": 0,
            "tokens": 0, "targets": 0, "general_targets": 0, "train_s": 0.0, "last_loss": None, "stopped_early": False}
    restored = ckpt.resume_latest(run / "checkpoints", model=model, optimizer=optimizer, scheduler=scheduler) if resume else None
    if restored is not None:
        loop = restored
    log = TrainLogger(run, total_steps, loop["step"] if resume else None, enabled=progress)
    log.header(f"cpt {cfg.adapter.mode} | {n_trainable:,} of {n_total:,} params trained | {len(rows)} rows of "
               f"{len(domain_ex)} domain + {len(general_ex)} general windows (general share "
               f"{mix['general_share_epoch']:.2f}) | {total_steps} steps | {device.type} {precision}")

    def save(best: bool = False):
        ckpt.save_checkpoint(run / "checkpoints", loop["step"], model=model, optimizer=optimizer,
                             scheduler=scheduler, loop_state=loop, keep=tc.keep_checkpoints, best=best)

    index = list(range(len(rows)))
    while loop["step"] < total_steps and not loop["stopped_early"]:
        order = epoch_order(len(rows), cfg.seed, loop["epoch"])
        epoch_batches = batches(rows, tc.batch_size, order)
        epoch_ids = batches(index, tc.batch_size, order)
        group = epoch_batches[loop["micro"] : loop["micro"] + tc.gradient_accumulation_steps]
        group_ids = epoch_ids[loop["micro"] : loop["micro"] + tc.gradient_accumulation_steps]
        t_step = time.time()
        n_step_targets = sum(count_targets(g) for g in group)  # the whole step's, on every rank
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
                dist.weigh(s / max(n_step_targets, 1), weight).backward()
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
        loop["targets"] += n_step_targets
        loop["general_targets"] += sum(count_targets([rows[i]]) for ids in group_ids for i in ids if is_general[i])
        loop["train_s"] += dt
        loop["last_loss"] = loss_sum / max(n_step_targets, 1)
        if loop["micro"] >= len(epoch_batches):
            loop["epoch"], loop["micro"] = loop["epoch"] + 1, 0
        log.step({"step": loop["step"], "epoch": round(loop["step"] / steps_per_epoch, 4), "loss": loop["last_loss"],
                  "lr": lr_now, "grad_norm": float(grad_norm), "tokens_per_s": n_tokens / max(dt, 1e-9), "tokens": loop["tokens"]})

        is_last = loop["step"] >= total_steps
        improved = False
        if val_rows and (loop["step"] % tc.eval_every == 0 or is_last):
            value = dist.evaluate(net, mean_loss, val_rows, batch_size=tc.batch_size, pad_id=pad_id, device=device, precision=precision)
            improved = record_evaluation(loop, value, higher_is_better=False, min_delta=tc.early_stopping_min_delta,
                                         patience=tc.early_stopping_patience, total_steps=total_steps, metrics={"val_loss": value})
            log.validation(loop["step"], {"val_loss": value}, "val_loss", loop["best_val"])
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
        "best_val_loss": loop["best_val"],
        "select_metric": "val_loss",
        "best_metric": loop["best_val"],
        "encoding": enc_stats,
        "system_prompt": cfg.data.system_prompt,
        # The share of trained (loss-bearing) tokens that came from general text, as trained.
        "general_share": round(loop["general_targets"] / max(loop["targets"], 1), 4), **mix,
    }
    if dist.is_main():
        update_run(run, **summary)
    return {"run_dir": str(run), **summary}
