"""Pure helpers every weight-training regimen shares: rows from examples, target counts, the
per-epoch batch order, and the mean loss over a set of rows."""

from __future__ import annotations

import torch

from tunesmith.data.packing import batches, collate, pack, unpacked
from tunesmith.data.templating import IGNORE
from tunesmith.training.losses import causal_lm_loss
from tunesmith.training.runtime import autocast, to_device


def make_rows(examples, max_length: int, packing: bool):
    return pack(examples, max_length) if packing else unpacked(examples)


def count_targets(rows) -> int:
    """Trained tokens after the next-token shift (the first label of each row is never a target)."""
    return sum(sum(1 for y in r.labels[1:] if y != IGNORE) for r in rows)


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The order of rows in an epoch: depends only on (seed, epoch), so a resumed run replays it."""
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=gen).tolist()


@torch.no_grad()
def mean_loss(model, rows, *, batch_size: int, pad_id: int, device, precision: str) -> float:
    """Mean next-token loss over all trained tokens of `rows` (model left in train mode)."""
    model.eval()
    total, n = 0.0, 0
    for group in batches(rows, batch_size, list(range(len(rows)))):
        with autocast(device, precision):
            s, k = causal_lm_loss(model, to_device(collate(group, pad_id), device))
        total, n = total + float(s), n + k
    model.train()
    return total / max(n, 1)
