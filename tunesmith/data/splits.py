"""Deterministic train/validation splits."""

from __future__ import annotations

import random


def split_rows(rows: list, fraction: float, seed: int) -> tuple[list, list]:
    """Hold out `fraction` of rows (at least 1 when fraction > 0 and there are >= 2 rows)."""
    if fraction <= 0 or len(rows) < 2:
        return list(rows), []
    idx = list(range(len(rows)))
    random.Random(seed).shuffle(idx)
    n_val = min(len(rows) - 1, max(1, round(len(rows) * fraction)))
    val = sorted(idx[:n_val])
    keep = sorted(idx[n_val:])
    return [rows[i] for i in keep], [rows[i] for i in val]
