"""Tests for tunesmith.training.pref_losses against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from tunesmith.errors import TunesmithError
from tunesmith.training.pref_losses import dpo_loss, group_advantages, grpo_loss


def softplus(x: float) -> float:
    """log(1 + e^x) = -logsigmoid(-x)."""
    return math.log1p(math.exp(x))


def pairs(requires_grad: bool = False):
    """Two pairs: policy chosen/rejected and reference chosen/rejected, summed log-probs (B=2).

    pair 1: (pc - rc) - (pr - rr) = (-10 + 11) - (-14 + 12) = 1 - (-2) = 3
    pair 2: (pc - rc) - (pr - rr) = (-8 + 7) - (-6 + 6) = -1 - 0 = -1
    """
    pc = torch.tensor([-10.0, -8.0], requires_grad=requires_grad)
    pr = torch.tensor([-14.0, -6.0], requires_grad=requires_grad)
    rc = torch.tensor([-11.0, -7.0], requires_grad=requires_grad)
    rr = torch.tensor([-12.0, -6.0], requires_grad=requires_grad)
    return pc, pr, rc, rr


def test_dpo_sigmoid_and_metrics():
    loss, m = dpo_loss(*pairs(), beta=0.1)
    # z = beta * h = [0.3, -0.1]; loss_i = -logsigmoid(z_i) = softplus(-z_i)
    # = [log(1 + e^-0.3), log(1 + e^0.1)] = [0.554355, 0.744397] -> mean 0.649376
    assert loss.item() == pytest.approx((softplus(-0.3) + softplus(0.1)) / 2, abs=1e-6)
    assert loss.item() == pytest.approx(0.649376, abs=1e-6)
    # reward_chosen = 0.1 * (pc - rc) = [0.1, -0.1] -> mean 0.0
    # reward_rejected = 0.1 * (pr - rr) = [-0.2, 0.0] -> mean -0.1
    # margins [0.3, -0.1] -> mean 0.1; accuracy: one of two margins > 0 -> 0.5
    assert m["reward_chosen"] == pytest.approx(0.0, abs=1e-6)
    assert m["reward_rejected"] == pytest.approx(-0.1, abs=1e-6)
    assert m["reward_margin"] == pytest.approx(0.1, abs=1e-6)
    assert m["reward_accuracy"] == 0.5
    assert all(isinstance(v, float) for v in m.values())


def test_dpo_label_smoothing():
    loss, _ = dpo_loss(*pairs(), beta=0.1, label_smoothing=0.1)
    # loss_i = 0.9 * softplus(-z) + 0.1 * softplus(z) = softplus(-z) + 0.1 * z
    # (since softplus(z) - softplus(-z) = z)
    # pair 1: 0.9 * 0.554355 + 0.1 * 0.854355 = 0.584355
    # pair 2: 0.9 * 0.744397 + 0.1 * 0.644397 = 0.734397   -> mean 0.659376 = 0.649376 + 0.1 * mean(z)
    assert loss.item() == pytest.approx(0.659376, abs=1e-6)


def test_ipo_summed_and_length_averaged():
    loss, _ = dpo_loss(*pairs(), beta=0.1, loss_type="ipo")
    # 1/(2 beta) = 5; h = [3, -1] -> (3 - 5)^2 = 4, (-1 - 5)^2 = 36 -> mean 20
    assert loss.item() == pytest.approx(20.0)
    loss, m = dpo_loss(*pairs(), beta=0.1, loss_type="ipo", chosen_len=[2, 4], rejected_len=[4, 2])
    # pair 1: (-10/2 + 11/2) - (-14/4 + 12/4) = 0.5 + 0.5 = 1 -> (1 - 5)^2 = 16
    # pair 2: (-8/4 + 7/4) - (-6/2 + 6/2) = -0.25 - 0 = -0.25 -> (-5.25)^2 = 27.5625
    assert loss.item() == pytest.approx((16 + 27.5625) / 2)
    # rewards use the averaged log-probs: chosen 0.1 * [0.5, -0.25] -> mean 0.0125
    assert m["reward_chosen"] == pytest.approx(0.0125, abs=1e-6)
    with pytest.raises(TunesmithError, match="label_smoothing"):
        dpo_loss(*pairs(), loss_type="ipo", label_smoothing=0.1)


def test_simpo_with_lengths_is_reference_free():
    pc, pr, _, _ = pairs()
    loss, m = dpo_loss(pc, pr, None, None, beta=2.0, loss_type="simpo", simpo_gamma=0.5,
                       chosen_len=torch.tensor([5.0, 2.0]), rejected_len=[7, 3])
    # averages: chosen [-10/5, -8/2] = [-2, -4], rejected [-14/7, -6/3] = [-2, -2]
    # z = 2 * (avg_c - avg_r) - 0.5 = [-0.5, -4.5]; loss = softplus(-z) = [log(1+e^0.5), log(1+e^4.5)]
    # = [0.974077, 4.511050] -> mean 2.742563
    assert loss.item() == pytest.approx(2.742563, abs=1e-5)
    # rewards = beta * avg log-prob: chosen [-4, -8] -> -6; rejected [-4, -4] -> -4;
    # margins [0, -4]: a zero margin is not a win -> accuracy 0
    assert m["reward_chosen"] == pytest.approx(-6.0)
    assert m["reward_rejected"] == pytest.approx(-4.0)
    assert m["reward_accuracy"] == 0.0
    with pytest.raises(TunesmithError, match="chosen_len"):
        dpo_loss(pc, pr, None, None, loss_type="simpo")


def test_dpo_gradients_reach_policy_only():
    pc, pr, rc, rr = pairs(requires_grad=True)
    loss, _ = dpo_loss(pc, pr, rc, rr, beta=0.1)
    loss.backward()
    assert rc.grad is None and rr.grad is None
    # d loss / d pc_i = -beta * sigmoid(-z_i) / B: negative (raise the chosen log-prob)
    expected = [-0.1 * (1 / (1 + math.exp(0.3))) / 2, -0.1 * (1 / (1 + math.exp(-0.1))) / 2]
    assert pc.grad.tolist() == pytest.approx(expected, abs=1e-7)
    assert (pr.grad > 0).all()


def test_dpo_bad_arguments():
    with pytest.raises(TunesmithError, match="loss_type"):
        dpo_loss(*pairs(), loss_type="kto")
    with pytest.raises(TunesmithError, match="reference"):
        pc, pr, _, _ = pairs()
        dpo_loss(pc, pr, None, None)
    with pytest.raises(TunesmithError, match="same shape"):
        pc, pr, rc, rr = pairs()
        dpo_loss(pc, pr[:1], rc, rr)


def test_group_advantages():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])
    adv = group_advantages(r, 4)
    # group 1: mean 0.5, population std 0.5 -> +-0.5 / (0.5 + 1e-4) = +-0.99980
    # group 2: all equal -> 0 / (0 + 1e-4) = 0, no NaN
    s = 0.5 / 0.5001
    assert adv.tolist() == pytest.approx([s, -s, -s, s, 0, 0, 0, 0], abs=1e-6)
    assert not torch.isnan(adv).any()
    centred = group_advantages(r, 4, scale=False)
    assert centred.tolist() == pytest.approx([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0])
    with pytest.raises(TunesmithError, match="groups of 3"):
        group_advantages(r, 3)


def test_grpo_on_policy_loss_is_minus_mean_advantage():
    torch.manual_seed(0)
    lp = -torch.rand(3, 4)  # (N=3, T=4)
    adv = torch.tensor([1.0, -0.5, 2.0])
    mask = torch.ones(3, 4)
    loss, m = grpo_loss(lp, lp.clone(), lp.clone(), adv, mask)
    # ratio = 1 on every token: per-token loss = -A, masked mean per row = -A -> mean -(1 - 0.5 + 2)/3
    assert loss.item() == pytest.approx(-2.5 / 3, abs=1e-6)
    assert m["ratio_mean"] == pytest.approx(1.0) and m["clip_fraction"] == 0.0 and m["kl"] == 0.0
    # Unequal masks with -inf padding: each row is still a mean of -A, and nothing is NaN.
    lp2 = lp.clone().requires_grad_(True)
    pad = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    old = lp.detach().masked_fill(pad == 0, float("-inf"))
    loss, _ = grpo_loss(lp2, old, None, adv, pad)
    assert loss.item() == pytest.approx(-2.5 / 3, abs=1e-6)
    loss.backward()
    assert torch.isfinite(lp2.grad).all() and (lp2.grad[pad == 0] == 0).all()


def test_grpo_clipped_case_by_hand():
    lp = torch.full((2, 2), math.log(1.5), requires_grad=True)  # ratio = 1.5 everywhere
    old = torch.zeros(2, 2)
    adv = torch.tensor([1.0, -1.0])
    loss, m = grpo_loss(lp, old, None, adv, torch.ones(2, 2), clip_eps=0.2)
    # row 0 (A=+1): -min(1.5 * 1, 1.2 * 1) = -1.2 (clipped)
    # row 1 (A=-1): -min(1.5 * -1, 1.2 * -1) = -min(-1.5, -1.2) = 1.5 (not clipped: pessimistic bound)
    # loss = (-1.2 + 1.5) / 2 = 0.15
    assert loss.item() == pytest.approx(0.15, abs=1e-6)
    assert m["clip_fraction"] == pytest.approx(0.5)  # row 0's 2 of 4 tokens
    assert m["ratio_mean"] == pytest.approx(1.5)
    assert "kl" not in m  # no reference given
    loss.backward()
    # row 0 clipped: no gradient; row 1: d(-ratio * A)/dlogp = ratio = 1.5, / 2 tokens / 2 rows = 0.375
    assert lp.grad[0].tolist() == [0.0, 0.0]
    assert lp.grad[1].tolist() == pytest.approx([0.375, 0.375])
    # ratio 0.5 with A = -1: -min(-0.5, -0.8) = 0.8 (clipped from below)
    loss, m = grpo_loss(torch.full((1, 1), math.log(0.5)), torch.zeros(1, 1), None, torch.tensor([-1.0]),
                        torch.ones(1, 1))
    assert loss.item() == pytest.approx(0.8, abs=1e-6) and m["clip_fraction"] == 1.0


def test_grpo_kl_penalty():
    lp = torch.zeros(2, 3)
    adv = torch.zeros(2)
    mask = torch.ones(2, 3)
    loss, m = grpo_loss(lp, lp, lp.clone(), adv, mask, kl_coef=0.1)
    assert loss.item() == 0.0 and m["kl"] == 0.0  # logp == ref -> k3 = e^0 - 0 - 1 = 0
    ref = torch.full((2, 3), math.log(0.5))
    loss, m = grpo_loss(lp, lp, ref, adv, mask, kl_coef=0.1)
    # k3 = exp(ref - logp) - (ref - logp) - 1 = 0.5 - ln 0.5 - 1 = 0.193147 per token; A = 0
    # loss = 0.1 * 0.193147 = 0.0193147
    assert m["kl"] == pytest.approx(0.5 - math.log(0.5) - 1, abs=1e-6)
    assert m["kl"] > 0
    assert loss.item() == pytest.approx(0.1 * (0.5 - math.log(0.5) - 1), abs=1e-6)
    with pytest.raises(TunesmithError, match="ref_logprobs"):
        grpo_loss(lp, lp, None, adv, mask, kl_coef=0.1)
