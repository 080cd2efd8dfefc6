"""Losses for training from a reward signal: pure functions of tensors, no model inside.

- `dpo_loss`: offline preference losses on (chosen, rejected) pairs: DPO (sigmoid), IPO and
  the reference-free SimPO. Inputs are per-sequence log-probs, as returned by
  `tunesmith.training.losses.sequence_logprobs` (summed over the trained tokens, shape (B,)).
- `group_advantages` and `grpo_loss`: online RL with group-relative advantages (GRPO,
  Shao et al. 2024, DeepSeekMath): several completions per prompt are sampled and scored,
  each completion's advantage is its reward standardised within its group, and the policy
  is updated with a PPO-style clipped surrogate plus an optional k3 KL penalty.

Reference and sampling-policy log-probs are detached inside the functions: they are
constants of the objective, so gradients only ever reach the current policy.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from tunesmith.errors import TunesmithError

LOSS_TYPES = ("sigmoid", "ipo", "simpo")
Lengths = torch.Tensor | Sequence[float] | None


def _lengths(lengths: Lengths, like: torch.Tensor, which: str) -> torch.Tensor:
    """Token counts as a float tensor shaped like `like` (B,), all positive."""
    if lengths is None:
        raise TunesmithError(f"{which} is required for this loss_type (the number of trained tokens per row)")
    out = torch.as_tensor(lengths, dtype=like.dtype, device=like.device)
    if out.shape != like.shape:
        raise TunesmithError(f"{which} has shape {tuple(out.shape)}, expected {tuple(like.shape)}")
    if bool((out <= 0).any()):
        raise TunesmithError(f"{which} must be positive: a sequence without trained tokens has no log-prob")
    return out


def _check_same_shape(**tensors: torch.Tensor | None) -> None:
    shapes = {k: tuple(v.shape) for k, v in tensors.items() if v is not None}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{k}={s}" for k, s in shapes.items())
        raise TunesmithError(f"log-prob tensors must have the same shape; got {listed}")


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor | None,
    ref_rejected: torch.Tensor | None,
    *,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    chosen_len: Lengths = None,
    rejected_len: Lengths = None,
    simpo_gamma: float = 0.5,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean preference loss over a batch of B pairs, and metrics for logging.

    All log-prob inputs are (B,) sums over each response's tokens.
    - "sigmoid" (DPO, Rafailov et al. 2023): z = beta * ((pc - rc) - (pr - rr)),
      loss = -(1 - ls) * logsigmoid(z) - ls * logsigmoid(-z) with ls = label_smoothing
      (conservative DPO: the labels are assumed flipped with probability ls).
    - "ipo" (Azar et al. 2023): h = (pc - rc) - (pr - rr), loss = (h - 1/(2*beta))**2.
      TRL feeds IPO length-averaged log-probs. Here: when chosen_len/rejected_len are
      given, all four log-probs are divided by their response's length first (TRL's
      behaviour); without them the inputs are used as they are (summed, or averages the
      caller computed). Label smoothing is not defined for IPO and is rejected.
    - "simpo" (Meng et al. 2024, reference-free): z = beta * (pc/len_c - pr/len_r) - gamma,
      loss as for "sigmoid" (with the same label smoothing). Needs chosen_len and
      rejected_len; ref_* are ignored and may be None.

    Metrics (batch means, floats): reward_chosen / reward_rejected = beta * (policy - ref)
    on the log-probs the loss used (SimPO: beta * average log-prob), reward_margin =
    chosen - rejected, reward_accuracy = share of pairs with margin > 0.
    """
    if loss_type not in LOSS_TYPES:
        choices = ", ".join(LOSS_TYPES)
        raise TunesmithError(f"unknown preference loss_type {loss_type!r}; choose one of {choices}")
    if beta <= 0:
        raise TunesmithError(f"beta must be positive, got {beta}")
    if not 0.0 <= label_smoothing < 0.5:
        raise TunesmithError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    if loss_type == "ipo" and label_smoothing:
        raise TunesmithError("label_smoothing is not defined for loss_type 'ipo'; set it to 0")
    if loss_type != "simpo" and (ref_chosen is None or ref_rejected is None):
        raise TunesmithError(
            f"loss_type {loss_type!r} needs reference log-probs (only 'simpo' is reference-free)"
        )
    if loss_type == "simpo":
        ref_chosen = ref_rejected = None
    _check_same_shape(policy_chosen=policy_chosen, policy_rejected=policy_rejected,
                      ref_chosen=ref_chosen, ref_rejected=ref_rejected)

    pc, pr = policy_chosen, policy_rejected
    if loss_type == "simpo":
        pc = pc / _lengths(chosen_len, pc, "chosen_len")
        pr = pr / _lengths(rejected_len, pr, "rejected_len")
        rc = rr = torch.zeros_like(pc)  # reference-free: the "reward" is beta * avg log-prob
    else:
        rc, rr = ref_chosen.detach(), ref_rejected.detach()
        if loss_type == "ipo" and (chosen_len is not None or rejected_len is not None):
            n_c = _lengths(chosen_len, pc, "chosen_len")
            n_r = _lengths(rejected_len, pr, "rejected_len")
            pc, rc, pr, rr = pc / n_c, rc / n_c, pr / n_r, rr / n_r

    h = (pc - rc) - (pr - rr)  # (B,) implicit-reward margin divided by beta
    if loss_type == "ipo":
        losses = (h - 1.0 / (2.0 * beta)) ** 2
    else:
        z = beta * h - (simpo_gamma if loss_type == "simpo" else 0.0)
        losses = -(1.0 - label_smoothing) * F.logsigmoid(z) - label_smoothing * F.logsigmoid(-z)

    with torch.no_grad():
        r_c, r_r = beta * (pc - rc), beta * (pr - rr)  # (B,)
        margin = r_c - r_r
        metrics = {
            "reward_chosen": r_c.float().mean().item(),
            "reward_rejected": r_r.float().mean().item(),
            "reward_margin": margin.float().mean().item(),
            "reward_accuracy": (margin > 0).float().mean().item(),
        }
    return losses.mean(), metrics


def group_advantages(
    rewards: torch.Tensor, group_size: int, *, eps: float = 1e-4, scale: bool = True
) -> torch.Tensor:
    """Group-relative advantages (N,) for rewards (N,) laid out as N/group_size consecutive groups.

    advantage = (r - group mean) / (group std + eps), or only r - group mean with
    scale=False (Dr. GRPO, Liu et al. 2025, drops the division because it up-weights
    prompts whose rewards barely differ). The std is the population std (unbiased=False):
    the group is the whole set being compared, and it stays defined for group_size 1. TRL
    uses the sample std, larger by sqrt(G/(G-1)). A group whose rewards are all equal gets
    zero advantages (0 / eps), never NaN: it carries no learning signal.
    """
    if rewards.dim() != 1:
        raise TunesmithError(f"rewards must be 1-D (N,), got shape {tuple(rewards.shape)}")
    if group_size < 1 or rewards.numel() % group_size:
        raise TunesmithError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    r = rewards.detach().float().view(-1, group_size)  # (N/G, G)
    centred = r - r.mean(dim=1, keepdim=True)
    if scale:
        centred = centred / (r.std(dim=1, unbiased=False, keepdim=True) + eps)
    return centred.reshape(-1)


def grpo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_eps: float = 0.2,
    kl_coef: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """GRPO objective (to minimise) for N sampled completions of up to T tokens.

    logprobs, old_logprobs, ref_logprobs, mask: (N, T): log-probs of the sampled tokens under
    the current policy, the policy that sampled them and the reference; mask is 1 on
    completion tokens. advantages: (N,) one per completion (or (N, T) per token).
    Per token: ratio = exp(logp - old), surrogate = -min(ratio * A, clip(ratio, 1-eps, 1+eps) * A),
    plus kl_coef * (exp(ref - logp) - (ref - logp) - 1) (Schulman's k3 estimator: unbiased
    for KL(policy || ref) on tokens sampled from the policy, and never negative). The loss is the mean over completions of the
    masked mean over each completion's tokens (DeepSeekMath's 1/G sum_i 1/|o_i| sum_t); a
    completion without tokens contributes 0 and still counts in 1/N.
    ref_logprobs may be None when kl_coef == 0 (no reference forward pass); "kl" is then
    left out of the metrics.

    Metrics (masked means over all completion tokens, floats): kl, clip_fraction (share of
    tokens where the clipped term wins, i.e. the gradient is cut: ratio > 1+eps with A > 0
    or ratio < 1-eps with A < 0, as in TRL) and ratio_mean.
    """
    if clip_eps <= 0:
        raise TunesmithError(f"clip_eps must be positive, got {clip_eps}")
    if ref_logprobs is None and kl_coef:
        raise TunesmithError("kl_coef > 0 needs ref_logprobs (the reference model's token log-probs)")
    _check_same_shape(logprobs=logprobs, old_logprobs=old_logprobs, ref_logprobs=ref_logprobs, mask=mask)
    if logprobs.dim() != 2:
        raise TunesmithError(f"token log-probs must be (N, T), got shape {tuple(logprobs.shape)}")
    adv = advantages.detach().to(logprobs.dtype)
    if adv.dim() == 1:
        adv = adv[:, None]  # (N, 1): one advantage for every token of a completion
    if adv.shape[0] != logprobs.shape[0]:
        raise TunesmithError(f"{adv.shape[0]} advantages for {logprobs.shape[0]} completions")
    keep = mask.bool()
    m = keep.to(logprobs.dtype)  # (N, T)
    # Zero the padding first (not after): padded log-probs may be -inf, and exp(inf) * 0
    # would put NaN into the loss and its gradient. `where` passes no gradient to them.
    logprobs = torch.where(keep, logprobs, 0.0)
    old_logprobs = torch.where(keep, old_logprobs.detach(), 0.0)
    if ref_logprobs is not None:
        ref_logprobs = torch.where(keep, ref_logprobs.detach(), 0.0)

    ratio = torch.exp(logprobs - old_logprobs)  # (N, T)
    clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    per_token = -torch.min(ratio * adv, clipped * adv)  # (N, T)
    kl = None
    if ref_logprobs is not None:
        d = ref_logprobs - logprobs
        kl = torch.exp(d) - d - 1.0  # (N, T), >= 0
        if kl_coef:
            per_token = per_token + kl_coef * kl
    tokens = m.sum(dim=1)  # (N,)
    per_seq = (per_token * m).sum(dim=1) / tokens.clamp(min=1.0)  # (N,)
    loss = per_seq.mean()

    with torch.no_grad():
        n = m.sum().clamp(min=1.0)
        cut = ((ratio > 1.0 + clip_eps) & (adv > 0)) | ((ratio < 1.0 - clip_eps) & (adv < 0))
        metrics = {
            "clip_fraction": ((cut.to(m.dtype) * m).sum() / n).item(),
            "ratio_mean": ((ratio * m).sum() / n).item(),
        }
        if kl is not None:
            metrics["kl"] = ((kl * m).sum() / n).item()
    return loss, metrics
