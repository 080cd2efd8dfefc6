"""Loss functions shared by the regimens: pure functions of tensors.

The causal-LM loss runs the output layer only on positions that are trained (labels !=
IGNORE): full-vocabulary logits for every position are the largest tensor in a step (B*L*V
floats), and with an assistant-only mask most of them are never used.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from tunesmith.data.templating import IGNORE
from tunesmith.errors import TunesmithError


def backbone_and_head(model):
    """The transformer body (returns hidden states) and the output layer of a causal LM, PEFT or not."""
    return model.get_decoder(), model.get_output_embeddings()


def hidden_states(model, batch: dict) -> torch.Tensor:
    """Last hidden states (B, L, H) for a collated batch (see data.packing.collate)."""
    body, _ = backbone_and_head(model)
    out = body(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        position_ids=batch["position_ids"],
        use_cache=False,
    )
    return out.last_hidden_state


def token_logits(model, h: torch.Tensor) -> torch.Tensor:
    """Logits (N, V) in float32 for selected hidden states h (N, H), with the model's softcap if any."""
    _, head = backbone_and_head(model)
    logits = head(h).float()
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def causal_lm_loss(model, batch: dict) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over trained tokens, and their count.

    Returns the SUM so that gradient accumulation can divide by the number of trained tokens
    of the whole accumulated batch: every token then weighs the same, however the tokens fall
    into micro-batches (what makes packed and padded losses agree).
    """
    h = hidden_states(model, batch)  # (B, L, H)
    targets = batch["labels"][:, 1:]  # (B, L-1): token t+1 is predicted at position t
    sel = targets != IGNORE
    n = int(sel.sum())
    if n == 0:
        return h.sum() * 0.0, 0
    logits = token_logits(model, h[:, :-1][sel])  # (N, V)
    return F.cross_entropy(logits, targets[sel], reduction="sum"), n


def sequence_logprobs(model, batch: dict) -> torch.Tensor:
    """Sum of log-probabilities of the trained tokens of each row, (B,): for preference losses
    and for scoring classification labels by likelihood."""
    h = hidden_states(model, batch)
    targets = batch["labels"][:, 1:]
    sel = targets != IGNORE
    logits = token_logits(model, h[:, :-1][sel])
    lp = torch.log_softmax(logits, -1).gather(-1, targets[sel][:, None]).squeeze(-1)  # (N,)
    row = torch.arange(targets.shape[0], device=targets.device)[:, None].expand_as(targets)[sel]
    return torch.zeros(targets.shape[0], dtype=lp.dtype, device=lp.device).index_add(0, row, lp)


def check_finite_loss(loss: float, step: int) -> float:
    """`loss` unchanged, or a one-line error when it is NaN or infinite.

    Every later step of a non-finite run is NaN too: stopping here (before the optimizer
    writes NaN into the weights) beats exporting a broken model and reporting success."""
    if not math.isfinite(loss):
        raise TunesmithError(f"training stopped: the loss at step {step} is not finite ({loss}); lower "
                             f"training.learning_rate, set training.max_grad_norm, or check the model "
                             f"weights and data (the last checkpoint, if any, is kept)")
    return loss
