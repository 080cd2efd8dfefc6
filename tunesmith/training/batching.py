"""Pure helpers every weight-training regimen shares: rows from examples, target counts, the
per-epoch batch order, and the mean loss over a set of rows."""

from __future__ import annotations

import torch

from tunesmith.data.packing import batches, collate, pack, unpacked
from tunesmith.data.templating import IGNORE
from tunesmith.training import distributed as dist
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


def grouped_order(lengths: list[int], batch_size: int, seed: int, epoch: int, window: int = 64) -> list[int]:
    """An epoch order in which each batch holds rows of similar length (each batch is padded to
    its longest row, so mixed lengths compute on padding). The seeded permutation is cut into
    windows of `window` batches, each window sorted by length (longest first), and the batches
    then shuffled, so that long and short batches still alternate over the epoch. Every row
    appears exactly once; the order depends only on (seed, epoch, lengths)."""
    order = epoch_order(len(lengths), seed, epoch)
    span = batch_size * window
    sorted_order = []
    for i in range(0, len(order), span):
        sorted_order += sorted(order[i : i + span], key=lambda j: -lengths[j])
    chunks = [sorted_order[i : i + batch_size] for i in range(0, len(sorted_order), batch_size)]
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch + 7_919)
    return [j for k in torch.randperm(len(chunks), generator=gen).tolist() for j in chunks[k]]


def batch_order(rows, batch_size: int, seed: int, epoch: int, group_by_length: bool) -> list[int]:
    """The epoch's row order: length-grouped (data.group_by_length) or a plain seeded shuffle."""
    if group_by_length:
        return grouped_order([len(r) for r in rows], batch_size, seed, epoch)
    return epoch_order(len(rows), seed, epoch)


@torch.no_grad()
def mean_loss(model, rows, *, batch_size: int, pad_id: int, device, precision: str) -> float:
    """Mean next-token loss over all trained tokens of `rows` (model left in train mode). Under
    torchrun each rank scores its share of the batches and the sums are added over the ranks."""
    model.eval()
    total, n = 0.0, 0
    # Longest first: a batch then pads little, and the sum does not depend on the order.
    for group, counted in dist.share(batches(rows, batch_size, sorted(range(len(rows)), key=lambda i: -len(rows[i])))):
        with autocast(device, precision):
            s, k = causal_lm_loss(model, to_device(collate(group, pad_id), device))
        if counted:
            total, n = total + float(s), n + k
    total, n = dist.all_sum(total), dist.all_sum(n)
    model.train()
    return total / max(n, 1)
