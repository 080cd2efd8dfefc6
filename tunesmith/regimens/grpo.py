"""GRPO: online reinforcement learning from reward functions (Shao et al. 2024, DeepSeekMath).

One `train()` from data to exported model, laid out like `sft.train`: load and check the
prompts and the rewards, prepare the run directory, load the model and mark what trains
(LoRA, full, freeze), then the loop, then export the best or last weights to `model/`.

Each step:
1. take `grpo.prompts_per_step` prompts in a seeded per-epoch order;
2. sample `grpo.group_size` completions per prompt (temperature, top_p, no top-k) with the
   sampling RNG seeded from (seed, step), so a resumed run samples exactly what an
   uninterrupted one would;
3. score them with `rewards.combine` (the dataset's columns are passed to every reward)
   and standardise the rewards within each prompt's group (`group_advantages`);
4. per-token log-probs of the sampled completions under the current policy (with grad,
   train mode), the sampling policy ("old": detached log-probs computed in eval mode right
   after sampling; with `updates_per_batch == 1` simply the current values detached) and
   the reference (the starting model: with LoRA the same model under `disable_adapter()`;
   with full/freeze a frozen copy, made only when `kl_coef > 0`). All three use logits
   divided by the sampling temperature, i.e. the distribution that was sampled from;
5. `grpo_loss` (clipped surrogate + k3 KL), with `updates_per_batch` optimizer passes over
   the sampled batch. The completions are processed `training.batch_size` at a time and
   their gradients accumulated (the loss is the mean over completions, so the result does
   not depend on the micro-batch size).

Data: `prompt_only` (extra columns such as `answer`, `aliases`, `tests` go to the rewards)
or `prompt_completion` (the `completion` is offered to the rewards as `answer`, so SFT
data can be reused with exact_match / numeric_match). See `tunesmith.eval.reward_eval`.
Rewards get the raw prompts (not the chat-templated text) as `prompts`, and the decoded
completions (special tokens dropped, stripped). Reward names, weights and the columns the
built-in rewards need are checked before any model loads. Prompts rendered with the chat
template (and `data.system_prompt`) that leave fewer than `grpo.max_new_tokens` tokens of
`data.max_length` are dropped (counted in the summary's `encoding.dropped`).

Logged per step (metrics.jsonl): loss, reward_mean, reward_std (over all completions of the
step), reward_group_std (mean within-group std: 0 means no learning signal), zero_std_groups,
reward/<name> (each reward's unweighted mean), kl (when a reference is computed),
clip_fraction, ratio_mean, completion_length (mean tokens), truncated (share of completions
that hit max_new_tokens), lr, grad_norm, tokens_per_s. Validation (when there is a
validation split): val_reward, the mean reward of greedy completions to the held-out
prompts, every `training.eval_every` steps; it picks the best checkpoint (higher is better)
and drives early stopping. `training.select_metric` and `gradient_accumulation_steps` do not
apply to GRPO (a step is one sampled batch).
"""

from __future__ import annotations

import math
import time
import contextlib
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from tunesmith.data.schemas import load_dataset
from tunesmith.data.splits import split_rows
from tunesmith.data.templating import prompt_text, to_messages
from tunesmith.errors import TunesmithError
from tunesmith.eval.reward_eval import ACCEPTS, check_rewards, repeat_columns, reward_columns
from tunesmith.rewards import combine
from tunesmith.runs import start_run, update_run
from tunesmith.training import checkpoint as ckpt
from tunesmith.training import distributed as dist
from tunesmith.training.adapters import is_lora, load_trainable, save_model
from tunesmith.training.batching import epoch_order
from tunesmith.training.losses import check_finite_loss, token_logits
from tunesmith.training.pref_losses import group_advantages, grpo_loss
from tunesmith.training.progress import TrainLogger
from tunesmith.training.runtime import autocast, prepare_runtime
from tunesmith.training.optim import build_optimizer
from tunesmith.training.selection import common_summary, load_best_for_export, record_evaluation


def _load_data(cfg):
    """Read and validate train (and validation) prompts and the rewards, before any model loads."""
    train_ds = load_dataset(cfg.data.train, cfg.data.type, accept=ACCEPTS)
    if cfg.data.validation:
        val_ds = load_dataset(cfg.data.validation, cfg.data.type or train_ds.type, accept=ACCEPTS)
        tr, va, va_type = train_ds.rows(), val_ds.rows(), val_ds.type
    else:
        (tr, va), va_type = split_rows(train_ds.rows(), cfg.data.val_fraction, cfg.seed), train_ds.type
    if not tr:
        raise TunesmithError(f"{cfg.data.train}: no prompts to train on")
    check_rewards(cfg.grpo.rewards, cfg.grpo.reward_options, reward_columns(tr, train_ds.type), len(tr), where=str(cfg.data.train))
    if va:
        check_rewards(cfg.grpo.rewards, cfg.grpo.reward_options, reward_columns(va, va_type), len(va),
                      where=str(cfg.data.validation or cfg.data.train))
    return train_ds, tr, va, va_type


# --- sampling and log-probs (pure functions of a model and tensors; tests use them) ----------

@dataclass
class Samples:
    """`group_size` sampled completions per prompt, laid out prompt by prompt (N = P * G rows)."""

    input_ids: torch.Tensor  # (N, Lp + C): left-padded prompt, then the completion
    attention_mask: torch.Tensor  # (N, Lp + C): 0 on left padding and on completion tokens after EOS
    prompt_len: int  # Lp
    mask: torch.Tensor  # (N, C): 1 on completion tokens (up to and including the first EOS)
    texts: list[str]  # decoded completions (special tokens dropped, stripped)
    truncated: list[bool]  # reached max_new_tokens without EOS

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def rows(self, idx: slice) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.input_ids[idx], self.attention_mask[idx], self.mask[idx]


@contextmanager
def _eval_mode(model):
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def completion_mask(completion_ids: torch.Tensor, eos_id: int | None) -> torch.Tensor:
    """(N, C) long: 1 up to and including each row's first EOS, 0 after it (the padding)."""
    if eos_id is None:
        return torch.ones_like(completion_ids)
    is_eos = (completion_ids == eos_id).long()
    after = (is_eos.cumsum(dim=1) - is_eos) > 0
    return (~after).long()


@torch.no_grad()
def sample_completions(model, tok, prompts: list[str], *, group_size: int, max_new_tokens: int,
                       temperature: float = 1.0, top_p: float = 1.0, seed: int = 0,
                       device=None, precision: str = "fp32") -> Samples:
    """Sample `group_size` completions for each rendered prompt text (eval mode, KV cache)."""
    device = device or next(model.parameters()).device
    side = tok.padding_side
    tok.padding_side = "left"
    try:
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    finally:
        tok.padding_side = side
    torch.manual_seed(seed)
    with _eval_mode(model), autocast(device, precision):
        out = model.generate(
            **enc, max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature, top_p=top_p, top_k=0,
            num_return_sequences=group_size, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
        )
    lp = enc["input_ids"].shape[1]
    comp = out[:, lp:]
    mask = completion_mask(comp, tok.eos_token_id)
    prompt_mask = enc["attention_mask"].repeat_interleave(group_size, dim=0)
    texts = [tok.decode(row[m.bool()], skip_special_tokens=True).strip() for row, m in zip(comp.cpu(), mask.cpu())]
    ended = (comp == tok.eos_token_id).any(dim=1) if tok.eos_token_id is not None else torch.zeros(len(comp), dtype=torch.bool)
    return Samples(out, torch.cat([prompt_mask, mask], dim=1), lp, mask, texts, (~ended).tolist())


def token_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_len: int,
                   mask: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """(N, C) log-probs of the completion tokens (input_ids[:, prompt_len:]) under `model`,
    with logits divided by `temperature`; 0 where mask is 0. The output layer runs only on
    completion positions. Position ids follow the left padding, as in generation."""
    position_ids = (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)
    body = model.get_decoder()
    h = body(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False).last_hidden_state
    h = h[:, prompt_len - 1 : -1]  # (N, C, H): position t predicts token t + 1
    targets = input_ids[:, prompt_len:]
    sel = mask.bool()
    logits = token_logits(model, h[sel]) / temperature  # (M, V) float32
    lp = torch.log_softmax(logits, dim=-1).gather(-1, targets[sel][:, None]).squeeze(-1)  # (M,)
    return torch.zeros(mask.shape, dtype=lp.dtype, device=lp.device).masked_scatter(sel, lp)


@torch.no_grad()
def batch_logprobs(model, samples: Samples, *, temperature: float, batch_size: int, device, precision: str) -> torch.Tensor:
    """token_logprobs of every sampled completion without gradient, in eval mode, batch_size rows at a time."""
    out = []
    with _eval_mode(model):
        for s in range(0, len(samples), batch_size):
            ids, attn, m = samples.rows(slice(s, s + batch_size))
            with autocast(device, precision):
                out.append(token_logprobs(model, ids, attn, samples.prompt_len, m, temperature).float())
    return torch.cat(out)


@torch.no_grad()
def reference_logprobs(model, ref_model, samples: Samples, *, temperature: float, batch_size: int,
                       device, precision: str) -> torch.Tensor:
    """Log-probs under the starting model: `ref_model` when given (full / freeze), else the
    PEFT model itself with its adapter disabled (no second copy of the weights)."""
    if ref_model is not None:
        return batch_logprobs(ref_model, samples, temperature=temperature, batch_size=batch_size, device=device, precision=precision)
    if not hasattr(model, "disable_adapter"):
        raise TunesmithError("a reference needs a PEFT model (disable_adapter) or a frozen reference copy")
    with model.disable_adapter():
        return batch_logprobs(model, samples, temperature=temperature, batch_size=batch_size, device=device, precision=precision)


def policy_update(model, samples: Samples, advantages: torch.Tensor, *, old: torch.Tensor | None,
                  ref: torch.Tensor | None, clip_eps: float, kl_coef: float, temperature: float,
                  batch_size: int, device, precision: str, net=None, n_step: int | None = None,
                  weight: float = 1.0) -> tuple[float, dict[str, float]]:
    """Accumulate the gradient of the GRPO loss over all sampled completions (batch_size at a
    time; no optimizer step here). old=None: the sampling policy is the current one (its
    values detached). Returns the loss and its metrics, token-weighted over micro-batches.
    Under torchrun: `net` (training/distributed.wrap) runs the forward, `n_step` is the step's
    completion count over all ranks and `weight` 0 marks a stand-in share; the loss and metrics
    returned are then the whole step's."""
    n = len(samples)
    n_all = n_step or n
    loss_total, sums, n_tok = 0.0, {}, 0.0
    starts = range(0, n, batch_size)
    for s in starts:
        idx = slice(s, s + batch_size)
        ids, attn, m = samples.rows(idx)
        with dist.accumulating(net, last=s == starts[-1]) if net is not None else contextlib.nullcontext():
            with autocast(device, precision):
                args = (ids, attn, samples.prompt_len, m, temperature)
                lp = (net(token_logprobs, *args) if net is not None else token_logprobs(model, *args)).float()
            loss, metrics = grpo_loss(lp, lp.detach() if old is None else old[idx], None if ref is None else ref[idx],
                                      advantages[idx].to(lp.device), m, clip_eps=clip_eps, kl_coef=kl_coef)
            share = ids.shape[0] / n_all  # grpo_loss is a mean over its completions; the step's over all of them
            dist.weigh(loss * share, weight).backward()
        loss_total += loss.item() * share * weight
        k = float(m.sum()) * weight
        for key, v in metrics.items():
            sums[key] = sums.get(key, 0.0) + v * k
        n_tok += k
    loss_total, n_tok = dist.all_sum(loss_total), dist.all_sum(n_tok)
    return loss_total, {key: dist.all_sum(v) / max(n_tok, 1.0) for key, v in sums.items()}


@torch.no_grad()
def validation_reward(model, tok, rows: list[dict], columns: dict, cfg) -> dict[str, float]:
    """Mean weighted reward of greedy completions to the validation prompts (and each reward's mean)."""
    from tunesmith.generation import GenerationSettings, generate_batch

    convs = [to_messages(r, "prompt_only", cfg.data.system_prompt) for r in rows]
    preds = generate_batch(model, tok, convs, GenerationSettings(max_new_tokens=cfg.grpo.max_new_tokens),
                           batch_size=max(cfg.training.batch_size, 16))
    model.train()
    total, parts = combine(cfg.grpo.rewards, [r["prompt"] for r in rows], preds, columns, options=cfg.grpo.reward_options)
    out = {"val_reward": sum(total) / len(total)}
    out.update({f"val_reward/{k}": sum(v) / len(v) for k, v in parts.items()})
    return out


def _gather_step(total: list[float], parts: dict, samples: Samples, share: float):
    """(rewards, reward parts, truncated flags, completion lengths, tokens) of the whole step:
    this rank's for one process; under torchrun every rank's in rank order (a stand-in share,
    weight 0, is left out)."""
    mine = (share, total, parts, samples.truncated, samples.mask.sum(dim=1).float(), int(samples.attention_mask.sum()))
    ranks = [x for x in dist.all_gather_object(mine) if x[0] > 0]
    if len(ranks) == 1:
        return ranks[0][1:]
    merged = {k: [v for x in ranks for v in x[2][k]] for k in parts}
    return ([v for x in ranks for v in x[1]], merged, [v for x in ranks for v in x[3]],
            torch.cat([x[4] for x in ranks]), sum(x[5] for x in ranks))


def _std(x: torch.Tensor) -> float:
    return float(x.float().std(unbiased=False)) if x.numel() > 1 else 0.0


def train(cfg, *, resume: bool = False, overwrite: bool = False, progress: bool = True) -> dict:
    t0 = time.time()
    tc, gc = cfg.training, cfg.grpo
    train_ds, train_rows, val_rows, val_type = _load_data(cfg)
    run = cfg.run_dir
    if dist.is_main():  # under torchrun rank 0 alone writes the run directory
        start_run(cfg, regimen="grpo", files={"train": cfg.data.train, "validation": cfg.data.validation},
                  counts={"train": len(train_rows), "validation": len(val_rows)},
                  data_info={"type": train_ds.type, "layout": train_ds.layout}, resume=resume, overwrite=overwrite)
        update_run(run, adapter=cfg.adapter.mode, data_type=train_ds.type, **dist.record())
    dist.barrier()

    # Model, trainable parameters, reference and device.
    device, precision = prepare_runtime(cfg.seed, tc)
    # LoRA gets its reference by disabling the adapter; full / freeze need a frozen copy of the
    # starting weights, made only when the KL term uses it.
    model, tok, ref_model, n_trainable, n_total = load_trainable(cfg, device, keep_reference=not is_lora(cfg.adapter.mode) and gc.kl_coef > 0)
    use_ref = is_lora(cfg.adapter.mode) or ref_model is not None

    # Prompts -> chat-template text; prompts too long to leave room for a completion are dropped.
    def render(rows):
        return [prompt_text(tok, to_messages(r, "prompt_only", cfg.data.system_prompt)) for r in rows]

    texts = render(train_rows)
    lengths = [len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
    keep = [i for i, n in enumerate(lengths) if n + gc.max_new_tokens <= cfg.data.max_length]
    enc_stats = {"n": len(train_rows), "dropped": len(train_rows) - len(keep), "truncated": 0}
    if not keep:
        raise TunesmithError(f"every prompt is longer than data.max_length ({cfg.data.max_length}) minus grpo.max_new_tokens")
    train_rows, texts = [train_rows[i] for i in keep], [texts[i] for i in keep]
    columns = reward_columns(train_rows, train_ds.type)
    val_columns = reward_columns(val_rows, val_type) if val_rows else {}

    P, G = gc.prompts_per_step, gc.group_size
    steps_per_epoch = math.ceil(len(train_rows) / P)
    total_steps = tc.max_steps or max(1, math.ceil(tc.epochs * steps_per_epoch))
    total_updates = total_steps * gc.updates_per_batch
    # The schedule counts optimizer updates: updates_per_batch of them per sampled batch.
    net = dist.wrap(model)  # under torchrun DDP: the gradient passes go through it
    dist.seed_rank(cfg.seed)
    params, optimizer, scheduler = build_optimizer(model, tc, total_updates)

    # Loop state; on resume it comes back from the latest checkpoint with every RNG.
    loop = {"step": 0, "epoch": 0, "pos": 0, "best_val": None, "best_step": None, "bad_evals": 0,
            "tokens": 0, "train_s": 0.0, "last_loss": None, "last_reward": None, "first_reward": None,
            "stopped_early": False}
    restored = ckpt.resume_latest(run / "checkpoints", model=model, optimizer=optimizer, scheduler=scheduler) if resume else None
    if restored is not None:
        loop = restored
    log = TrainLogger(run, total_steps, loop["step"] if resume else None, enabled=progress)
    log.header(f"grpo {cfg.adapter.mode} | {n_trainable:,} of {n_total:,} params trained | {len(train_rows)} prompts, "
               f"{P} x {G} completions per step | {total_steps} steps | rewards {dict(gc.rewards)} | {device.type} {precision}")

    def save(best: bool = False):
        ckpt.save_checkpoint(run / "checkpoints", loop["step"], model=model, optimizer=optimizer,
                             scheduler=scheduler, loop_state=loop, keep=tc.keep_checkpoints, best=best)

    mb = tc.batch_size
    while loop["step"] < total_steps and not loop["stopped_early"]:
        t_step = time.time()
        order = epoch_order(len(train_rows), cfg.seed, loop["epoch"])
        (idx, share), = dist.shard([order[loop["pos"] : loop["pos"] + P]])  # under torchrun, this rank's prompts

        # 1-3: sample, score, advantages. The sampling seed depends on (seed, step, rank) only.
        # Each rank samples with the model itself (not DDP's wrapper): generation needs no gradient.
        samples = sample_completions(model, tok, [texts[i] for i in idx], group_size=G, max_new_tokens=gc.max_new_tokens,
                                     temperature=gc.temperature, top_p=gc.top_p,
                                     seed=cfg.seed * 1_000_003 + loop["step"] + 104_729 * dist.rank(),
                                     device=device, precision=precision)
        prompts = [train_rows[i]["prompt"] for i in idx for _ in range(G)]
        total, parts = combine(gc.rewards, prompts, samples.texts, repeat_columns(columns, idx, G), options=gc.reward_options)
        advantages = group_advantages(torch.tensor(total, dtype=torch.float32), G, scale=gc.scale_advantages)
        # The step's figures over all ranks (groups stay whole: each rank samples whole groups).
        total, parts, truncated, n_comp, n_tokens = _gather_step(total, parts, samples, share)
        rewards = torch.tensor(total, dtype=torch.float32)

        # 4: reference and sampling-policy log-probs (constants of the objective).
        kw = dict(temperature=gc.temperature, batch_size=mb, device=device, precision=precision)
        ref = reference_logprobs(model, ref_model, samples, **kw) if use_ref else None
        old = batch_logprobs(model, samples, **kw) if gc.updates_per_batch > 1 else None

        # 5: updates_per_batch optimizer passes over the sampled batch.
        losses, metric_sums, grad_norm, lr_now = [], {}, 0.0, optimizer.param_groups[0]["lr"]
        for _ in range(gc.updates_per_batch):
            loss, metrics = policy_update(model, samples, advantages, old=old, ref=ref, clip_eps=gc.clip_eps,
                                          kl_coef=gc.kl_coef, net=net, n_step=len(total) or None, weight=share, **kw)
            check_finite_loss(loss, loop["step"] + 1)
            grad_norm = dist.clip_grad_norm(params, tc.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss)
            for k, v in metrics.items():
                metric_sums[k] = metric_sums.get(k, 0.0) + v / gc.updates_per_batch

        dt = time.time() - t_step
        loop["pos"] += P
        loop["step"] += 1
        loop["tokens"] += n_tokens
        loop["train_s"] += dt
        loop["last_loss"] = sum(losses) / len(losses)
        loop["last_reward"] = float(rewards.mean())
        if loop["first_reward"] is None:
            loop["first_reward"] = loop["last_reward"]
        if loop["pos"] >= len(train_rows):
            loop["epoch"], loop["pos"] = loop["epoch"] + 1, 0
        record = {"step": loop["step"], "epoch": round(loop["step"] / steps_per_epoch, 4), "loss": loop["last_loss"],
                  "reward_mean": loop["last_reward"], "reward_std": _std(rewards),
                  "reward_group_std": float(rewards.view(-1, G).std(dim=1, unbiased=False).mean()),
                  "zero_std_groups": float((rewards.view(-1, G).std(dim=1, unbiased=False) < 1e-6).float().mean()),
                  **{f"reward/{k}": sum(v) / len(v) for k, v in parts.items()},
                  "kl": metric_sums.get("kl"), "clip_fraction": metric_sums.get("clip_fraction"),
                  "ratio_mean": metric_sums.get("ratio_mean"), "completion_length": float(n_comp.mean()),
                  "truncated": sum(truncated) / len(truncated), "lr": lr_now, "grad_norm": float(grad_norm),
                  "tokens_per_s": n_tokens / max(dt, 1e-9), "tokens": loop["tokens"]}
        log.step(record)
        # The GRPO loss sits near 0 whatever happens (advantages are centred): show the reward too.
        log.bar.set_postfix(loss=f"{record['loss']:.4f}", reward=f"{record['reward_mean']:.3f}",
                            kl=f"{record['kl']:.4f}" if record["kl"] is not None else "-", refresh=False)
        if log.tb:
            for k in ("reward_mean", "reward_std", "kl", "clip_fraction", "completion_length"):
                if record.get(k) is not None:
                    log.tb.add_scalar(f"train/{k}", record[k], record["step"])

        is_last = loop["step"] >= total_steps
        improved = False
        if val_rows and (loop["step"] % tc.eval_every == 0 or is_last):
            val = dist.evaluate(net, validation_reward, tok, val_rows, val_columns, cfg)
            value = val["val_reward"]  # higher is better
            improved = record_evaluation(loop, value, higher_is_better=True, min_delta=tc.early_stopping_min_delta,
                                         patience=tc.early_stopping_patience, total_steps=total_steps, metrics=val)
            log.validation(loop["step"], val, "val_reward", loop["best_val"])
        if improved or is_last or loop["stopped_early"] or loop["step"] % tc.save_every == 0:
            save(best=improved)
    log.close()

    # Export: the best checkpoint by validation reward, or the last weights.
    exported = load_best_for_export(run, model, tc.load_best)
    if dist.is_main():
        save_model(model, tok, run / "model")
    summary = {
        **common_summary(loop, t0=t0, n_trainable=n_trainable, n_total=n_total, device=device, precision=precision, exported=exported),
        "best_val_loss": None,
        "select_metric": "val_reward",
        "best_metric": loop["best_val"],
        "best_val_reward": loop["best_val"],
        "first_reward": loop["first_reward"],
        "final_reward": loop["last_reward"],
        "encoding": enc_stats,
        "system_prompt": cfg.data.system_prompt,
        "rewards": dict(gc.rewards),
        "reference": "disable_adapter" if ref_model is None and use_ref else ("frozen_copy" if ref_model is not None else None),
    }
    if dist.is_main():
        update_run(run, **summary)
    return {"run_dir": str(run), **summary}
