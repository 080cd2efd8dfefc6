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
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from tunesmith.atomic import write_json_atomic
from tunesmith.errors import TunesmithError
from tunesmith.rundir import disk_full, remove_tree, warn

FILES = ("trainable.safetensors", "optim.pt", "loop.json")
MANIFEST = "manifest.json"


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
    """Write checkpoints/step-NNNNNNN atomically and point state.json at it. Its manifest.json
    (written last) records each file's size and sha256, so that resume can tell a damaged
    checkpoint from a good one. A failed write (a full disk) removes the partial copy and
    leaves the previous checkpoint as it was."""
    ckpt_root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:07d}"
    tmp = Path(tempfile.mkdtemp(prefix=name + ".", suffix=".tmp", dir=ckpt_root))
    try:
        save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
        torch.save(
            {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state()},
            tmp / "optim.pt",
        )
        write_json_atomic(tmp / "loop.json", loop_state)
        write_json_atomic(tmp / MANIFEST, {f: _describe(tmp / f) for f in FILES})
    except BaseException as e:  # the partial copy goes whatever stopped it (a full disk, Ctrl-C)
        remove_tree(tmp, ckpt_root)
        err = disk_full(e, ckpt_root)
        if err is not None:
            raise err from None
        raise
    final = ckpt_root / name
    if final.exists():  # re-saving the same step after a resume: replace it
        remove_tree(final, ckpt_root)
    os.replace(tmp, final)
    state = read_state(ckpt_root)
    state["latest"] = name
    if best:
        state["best"] = name
    try:
        write_json_atomic(ckpt_root / "state.json", state)
    except OSError as e:
        err = disk_full(e, ckpt_root)
        if err is not None:
            raise err from None
        raise
    _prune(ckpt_root, state, keep)
    return final


def _describe(path: Path) -> dict:
    from tunesmith.data.io import file_sha256

    return {"size": path.stat().st_size, "sha256": file_sha256(path)}


def damage(ckpt_dir: Path) -> str | None:
    """Why a checkpoint cannot be trusted (a missing, truncated or changed file), or None."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return "missing"
    try:
        manifest = json.loads((ckpt_dir / MANIFEST).read_text())
    except FileNotFoundError:
        manifest = None  # written before manifests existed: check that the files are there
    except (OSError, ValueError):
        return f"{MANIFEST} unreadable"
    for f in FILES:
        p = ckpt_dir / f
        if not p.exists() or p.stat().st_size == 0:
            return f"{f} missing or empty"
        if manifest is not None:
            want = manifest.get(f, {})
            if p.stat().st_size != want.get("size"):
                return f"{f} has {p.stat().st_size} bytes, {want.get('size')} were written"
            if _describe(p)["sha256"] != want.get("sha256"):
                return f"{f} changed since it was written (checksum differs)"
    return None


def read_state(ckpt_root: Path) -> dict:
    """state.json (latest and best checkpoint names); a damaged one reads as empty, since the
    checkpoints themselves say which is newest."""
    p = Path(ckpt_root) / "state.json"
    try:
        state = json.loads(p.read_text()) if p.exists() else {}
    except (OSError, ValueError):
        warn(f"{p}: unreadable; finding the checkpoints from the folder instead")
        return {}
    return state if isinstance(state, dict) else {}


def _prune(ckpt_root: Path, state: dict, keep: int) -> None:
    """Keep the newest `keep` checkpoints and the best one; remove temp leftovers of killed saves."""
    steps = sorted(p.name for p in ckpt_root.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp"))
    protected = {state.get("latest"), state.get("best")} | set(steps[-keep:])
    for name in steps:
        if name not in protected:
            remove_tree(ckpt_root / name, ckpt_root)
    for tmp in ckpt_root.glob("*.tmp"):
        remove_tree(tmp, ckpt_root)


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


def _repoint(ckpt_root: Path, state: dict, name: str) -> None:
    """Make state.json name the checkpoint resumed from (and forget a best that is gone)."""
    state = {**state, "latest": name}
    if state.get("best") and damage(ckpt_root / state["best"]) is not None:
        state.pop("best")
    write_json_atomic(ckpt_root / "state.json", state)


def _step_names(ckpt_root: Path) -> list[str]:
    """Checkpoint folder names, newest first."""
    return sorted({p.name for p in Path(ckpt_root).glob("step-*") if p.is_dir() and not p.name.endswith(".tmp")}, reverse=True)


def check_resumable(ckpt_root: Path) -> None:
    """Before a resume touches anything: refuse when checkpoints exist but none is intact."""
    names = _step_names(ckpt_root)
    if (names or read_state(ckpt_root).get("latest")) and all(damage(Path(ckpt_root) / n) for n in names):
        raise TunesmithError(f"{ckpt_root}: no intact checkpoint to resume from (each is damaged or missing); start over with --overwrite")


def resume_latest(ckpt_root: Path, *, model, optimizer, scheduler) -> dict | None:
    """Restore the newest intact checkpoint and return its loop state (None: no checkpoint).
    A damaged newer one (half-written file, deleted folder, empty loop.json) is skipped with a
    one-line warning; when every checkpoint is damaged the run cannot continue."""
    ckpt_root = Path(ckpt_root)
    state = read_state(ckpt_root)
    names = _step_names(ckpt_root)
    if state.get("latest") and state["latest"] not in names:
        warn(f"{ckpt_root / state['latest']}: the latest checkpoint is missing")
    for name in names:
        why = damage(ckpt_root / name)
        if why is None:
            try:
                loop = load_checkpoint(ckpt_root / name, model=model, optimizer=optimizer, scheduler=scheduler)
            except Exception as e:  # a file that passes the checks but does not load is damaged too
                why = f"does not load: {type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"
            else:
                if name != names[0] or state.get("latest") != name:
                    warn(f"resuming from {ckpt_root / name}, the newest intact checkpoint")
                    _repoint(ckpt_root, state, name)
                return loop
        warn(f"{ckpt_root / name}: damaged ({why}); skipping it")
    if names or state.get("latest"):
        raise TunesmithError(f"{ckpt_root}: no intact checkpoint to resume from; start over with --overwrite")
    return None
