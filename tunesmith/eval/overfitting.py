"""Did training overfit? Read a run's metrics.jsonl and compare validation and training loss.

Overfitting is called when validation loss rose after its best evaluation by more than a
tolerance (default 5% relative), the rise held for at least two evaluations after the best,
and training loss kept falling over that same span: the model got better at its training set
and worse at unseen data. When training loss rose too, that is divergence (a learning rate or
stability problem), not overfitting, and the evidence says so.

metrics.jsonl (see tunesmith.runs): training lines {"step", "loss", "lr", ...} and validation
lines {"step", "val_loss"}.
"""

from __future__ import annotations

import math
from pathlib import Path
from statistics import fmean

from tunesmith.errors import TunesmithError


def _read(path: Path) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(training, validation) as (step, loss) lists sorted by step; a step logged twice keeps
    its last line (a resumed run rewrites the steps past its checkpoint)."""
    from tunesmith.runs import read_metrics  # drops a torn last line with a warning

    train: dict[int, float] = {}
    val: dict[int, float] = {}
    for rec in read_metrics(path):
        if "step" not in rec:
            continue
        if rec.get("val_loss") is not None:
            val[int(rec["step"])] = float(rec["val_loss"])
        elif rec.get("loss") is not None:
            train[int(rec["step"])] = float(rec["loss"])
    return sorted(train.items()), sorted(val.items())


def _mean_train(train: list[tuple[int, float]], lo: int, hi: int) -> float | None:
    """Mean training loss over steps in (lo, hi]: the interval an evaluation at `hi` closes.
    Averaging the whole interval smooths per-step noise; falls back to the nearest earlier step."""
    xs = [v for s, v in train if lo < s <= hi]
    if not xs:
        xs = [v for s, v in train if s <= hi][-1:]
    return fmean(xs) if xs else None


def _judge(train, val, best_i: int, tolerance: float, min_evals_after: int) -> tuple[bool | None, str]:
    """(overfitting flag, evidence) from the validation curve around its best point."""
    best_step, best = val[best_i]
    final_step, final = val[-1]
    after = len(val) - 1 - best_i
    if not math.isfinite(final):
        return False, f"divergence: validation loss became {final} at step {final_step} (best {best:.4f} at step {best_step})"
    rise = final / best - 1.0 if best > 0 else final - best
    if after == 0:
        return False, f"validation loss was still at its best at the last evaluation ({best:.4f}, step {best_step})"
    if rise <= tolerance:
        return False, (f"validation loss ended {rise:+.1%} from its best ({best:.4f} at step {best_step} -> "
                       f"{final:.4f} at step {final_step}), within the {tolerance:.0%} tolerance")
    if after < min_evals_after:
        return False, (f"validation loss rose {rise:+.1%} after its best (step {best_step}) but only {after} "
                       f"evaluation(s) followed it; need {min_evals_after} to call overfitting")
    prev_step = val[best_i - 1][0] if best_i > 0 else 0
    t_best = _mean_train(train, prev_step, best_step)
    t_end = _mean_train(train, val[-2][0], final_step)
    if t_best is None or t_end is None:
        return None, f"validation loss rose {rise:+.1%} after step {best_step}, but no training loss was logged to compare"
    span = (f"validation loss rose {rise:+.1%} ({best:.4f} at step {best_step} -> {final:.4f} at step "
            f"{final_step}, {after} evaluations) while training loss went {t_best:.4f} -> {t_end:.4f}")
    if not math.isfinite(t_end) or t_end >= t_best:
        return False, f"divergence, not overfitting: {span} (it rose too; lower the learning rate)"
    return True, f"overfitting: {span}; the best checkpoint is step {best_step}"


def analyse_metrics(metrics_path: Path, *, tolerance: float = 0.05, min_evals_after: int = 2) -> dict:
    """Summarise a run's losses and flag overfitting (see the module docstring).

    `metrics_path` is a metrics.jsonl file or a run directory holding one. Returns
    {"best_val_step", "best_val_loss", "final_val_loss", "final_train_loss", "n_val_evals",
    "overfitting": True/False, or None when it cannot be judged, "evidence": one line}.
    """
    path = Path(metrics_path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.exists():
        raise TunesmithError(f"{path}: no such metrics file (a run writes metrics.jsonl while it trains)")
    train, val = _read(path)
    out = {
        "best_val_step": None, "best_val_loss": None, "final_val_loss": None,
        "final_train_loss": train[-1][1] if train else None, "n_val_evals": len(val),
    }
    finite = [i for i, (_, v) in enumerate(val) if math.isfinite(v)]
    if not finite:
        why = "no validation loss logged" if not val else "validation loss was never finite (divergence)"
        return {**out, "final_val_loss": val[-1][1] if val else None, "overfitting": None if not val else False,
                "evidence": why}
    best_i = min(finite, key=lambda i: val[i][1])  # first occurrence of the minimum
    flag, evidence = _judge(train, val, best_i, tolerance, min_evals_after)
    return {**out, "best_val_step": val[best_i][0], "best_val_loss": val[best_i][1],
            "final_val_loss": val[-1][1], "overfitting": flag, "evidence": evidence}
