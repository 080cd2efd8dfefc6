"""Checkpoint I/O: atomic save and exact resume.

A checkpoint holds everything needed to continue as if never stopped: the trainable weights,
the optimizer and scheduler state, every RNG state, and the loop's counters. It is written to
a temporary directory and renamed into place; `state.json` (also replaced atomically) names
the latest and best checkpoints, so a kill at any moment leaves a valid, older checkpoint.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from tunesmith.atomic import write_json_atomic


def trainable_state(model) -> dict[str, torch.Tensor]:
    """The parameters that training changes (all of them for full fine-tuning)."""
    return {n: p.detach().clone().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def save_checkpoint(ckpt_root: Path, step: int, *, model, optimizer, scheduler, loop_state: dict, keep: int = 2, best: bool = False) -> Path:
    """Write checkpoints/step-NNNNNNN atomically and point state.json at it."""
    ckpt_root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:07d}"
    tmp = Path(tempfile.mkdtemp(prefix=name + ".", suffix=".tmp", dir=ckpt_root))
    save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
    torch.save(
        {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state()},
        tmp / "optim.pt",
    )
    write_json_atomic(tmp / "loop.json", loop_state)
    final = ckpt_root / name
    if final.exists():  # re-saving the same step after a resume: replace it
        shutil.rmtree(final)
    os.replace(tmp, final)
    state = read_state(ckpt_root)
    state["latest"] = name
    if best:
        state["best"] = name
    write_json_atomic(ckpt_root / "state.json", state)
    _prune(ckpt_root, state, keep)
    return final


def read_state(ckpt_root: Path) -> dict:
    p = Path(ckpt_root) / "state.json"
    return json.loads(p.read_text()) if p.exists() else {}


def _prune(ckpt_root: Path, state: dict, keep: int) -> None:
    """Keep the newest `keep` checkpoints and the best one; remove temp leftovers of killed saves."""
    steps = sorted(p.name for p in ckpt_root.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp"))
    protected = {state.get("latest"), state.get("best")} | set(steps[-keep:])
    for name in steps:
        if name not in protected:
            shutil.rmtree(ckpt_root / name, ignore_errors=True)
    for tmp in ckpt_root.glob("*.tmp"):
        shutil.rmtree(tmp, ignore_errors=True)


def load_checkpoint(ckpt_dir: Path, *, model, optimizer=None, scheduler=None) -> dict:
    """Restore weights (and optimizer, scheduler, RNG when given); return the loop state."""
    weights = load_file(str(ckpt_dir / "trainable.safetensors"))
    params = dict(model.named_parameters())
    missing = [n for n in weights if n not in params]
    if missing:
        raise RuntimeError(f"{ckpt_dir}: checkpoint does not match the model (e.g. {missing[0]})")
    with torch.no_grad():
        for n, t in weights.items():
            params[n].copy_(t)
    if optimizer is not None:
        blob = torch.load(ckpt_dir / "optim.pt", weights_only=False)
        optimizer.load_state_dict(blob["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(blob["scheduler"])
        set_rng_state(blob["rng"])
    return json.loads((ckpt_dir / "loop.json").read_text())
