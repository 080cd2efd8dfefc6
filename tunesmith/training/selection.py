"""Checkpoint selection and the run summary, shared by every weight-training regimen: which
evaluation is the best so far, when to stop early, what gets exported, and the summary fields
every run.json carries.

`record_evaluation` is also the one place every regimen's validations pass through, so a caller
(the hyperparameter search, tunesmith.tune) can watch them: `reporting(fn)` makes
fn(step, total_steps, metrics) hear each one for the block; fn may raise to stop the run."""

from __future__ import annotations

import contextlib
import contextvars
import time
from pathlib import Path

from tunesmith.training import checkpoint as ckpt
from tunesmith.training.runtime import peak_memory_mib


_REPORTER: contextvars.ContextVar = contextvars.ContextVar("evaluation_reporter", default=None)


@contextlib.contextmanager
def reporting(fn):
    """Within the block, call fn(step, total_steps, metrics) at every validation of any regimen."""
    token = _REPORTER.set(fn)
    try:
        yield
    finally:
        _REPORTER.reset(token)


def record_evaluation(loop: dict, value: float, *, higher_is_better: bool, min_delta: float, patience: int | None,
                      total_steps: int | None = None, metrics: dict | None = None) -> bool:
    """Update the loop's best value, best step, patience counter and early-stop flag with one
    evaluation; return whether it improved on the best by more than `min_delta`. `metrics`: every
    validation figure of this evaluation, passed with `total_steps` to a `reporting` listener."""
    best = loop["best_val"]
    gain = (value - best) if (best is not None and higher_is_better) else (best - value if best is not None else None)
    improved = best is None or gain > min_delta
    if improved:
        loop["best_val"], loop["best_step"], loop["bad_evals"] = value, loop["step"], 0
    else:
        loop["bad_evals"] += 1
        if patience and loop["bad_evals"] >= patience:
            loop["stopped_early"] = True
    listener = _REPORTER.get()
    if listener is not None:
        listener(loop["step"], total_steps, metrics if metrics is not None else {"value": value})
    return improved


def load_best_for_export(run: Path, model, load_best: bool) -> str:
    """Load the best checkpoint's weights when it is not the last one; return what is exported."""
    state = ckpt.read_state(run / "checkpoints")
    if load_best and state.get("best") and state.get("best") != state.get("latest"):
        why = ckpt.damage(run / "checkpoints" / state["best"])
        if why:
            from tunesmith.rundir import warn

            warn(f"{run / 'checkpoints' / state['best']}: the best checkpoint is damaged ({why}); exporting the last weights")
            return "last"
        ckpt.load_checkpoint(run / "checkpoints" / state["best"], model=model)
        return state["best"]
    return "last"


def common_summary(loop: dict, *, t0: float, n_trainable: int, n_total: int, device, precision: str, exported: str) -> dict:
    """The run.json fields every trained run has, so that studies compare them uniformly."""
    return {
        "status": "completed", "steps": loop["step"], "final_loss": loop["last_loss"], "best_step": loop["best_step"],
        "exported": exported, "stopped_early": loop["stopped_early"], "trained_tokens": loop["tokens"],
        "train_seconds": round(loop["train_s"], 2), "tokens_per_s": round(loop["tokens"] / max(loop["train_s"], 1e-9), 1),
        "wall_seconds": round(time.time() - t0, 2), "trainable_params": n_trainable, "total_params": n_total,
        "peak_memory_mib": round(peak_memory_mib(device), 1), "precision": precision, "device": device.type,
    }
