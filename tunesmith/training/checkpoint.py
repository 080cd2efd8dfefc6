"""Checkpoint I/O: atomic save and exact resume.

A checkpoint holds everything needed to continue as if never stopped: the trainable weights,
the optimizer and scheduler state, every RNG state, and the loop's counters. It is written to
a temporary directory and renamed into place; `state.json` (also replaced atomically) names
the latest and best checkpoints, so a kill at any moment leaves a valid, older checkpoint.

Under torchrun (several processes) a checkpoint also holds `layout.json` (world size and
training.distributed) and one RNG file per rank; under FSDP the weights and optimizer state
are a `torch.distributed.checkpoint` folder (`dcp/`, one shard file per rank). Such a
checkpoint resumes exactly with the same number of processes and mode, and refuses any other
with a one-line error; rank 0 alone renames it into place and writes state.json.
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
from tunesmith.training import distributed as dist
from tunesmith.rundir import disk_full, remove_tree, warn

FILES = ("trainable.safetensors", "optim.pt", "loop.json")
MANIFEST = "manifest.json"
LAYOUT = "layout.json"


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
    if dist.world() > 1:
        return _save_distributed(ckpt_root, step, model=model, optimizer=optimizer, scheduler=scheduler,
                                 loop_state=loop_state, keep=keep, best=best)
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
    return _publish(ckpt_root, tmp, name, keep=keep, best=best)


def _publish(ckpt_root: Path, tmp: Path, name: str, *, keep: int, best: bool) -> Path:
    """Rename a complete temporary checkpoint into place and point state.json at it."""
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


def _sharded_state(model, optimizer):
    """FSDP's sharded model (trainable weights only) and optimizer state dicts, for DCP."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    return get_state_dict(model, optimizer, options=StateDictOptions(ignore_frozen_params=True))


def _save_distributed(ckpt_root: Path, step: int, *, model, optimizer, scheduler, loop_state: dict, keep: int, best: bool) -> Path:
    """save_checkpoint on several processes (every rank calls it). Rank 0 makes the temporary
    folder; each rank writes its RNG state (and under FSDP its DCP shards); rank 0 writes the
    rest, the manifest last, and renames the folder once every rank has finished writing."""
    import torch.distributed.checkpoint as dcp

    name = f"step-{step:07d}"
    tmp = None
    if dist.is_main():
        ckpt_root.mkdir(parents=True, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=name + ".", suffix=".tmp", dir=ckpt_root)
    tmp = Path(dist.broadcast_object(tmp))
    try:
        torch.save(rng_state(), tmp / f"rng-{dist.rank()}.pt")
        if dist.mode() == "fsdp":
            msd, osd = _sharded_state(model, optimizer)
            dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(tmp / "dcp"))
        elif dist.is_main():  # DDP: weights and optimizer state are the same on every rank
            save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
            torch.save({"optimizer": optimizer.state_dict()}, tmp / "optim.pt")
        if dist.is_main():
            torch.save({"scheduler": scheduler.state_dict()}, tmp / "schedule.pt")
            write_json_atomic(tmp / "loop.json", loop_state)
            write_json_atomic(tmp / LAYOUT, dist.layout())
        dist.barrier()  # every rank's files are complete
        if dist.is_main():
            files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
            write_json_atomic(tmp / MANIFEST, {f: _describe(tmp / f) for f in files})
    except BaseException as e:
        if dist.is_main():
            remove_tree(tmp, ckpt_root)
            err = disk_full(e, ckpt_root)
            if err is not None:
                raise err from None
        raise
    final = _publish(ckpt_root, tmp, name, keep=keep, best=best) if dist.is_main() else ckpt_root / name
    dist.barrier()  # nobody reads checkpoints/ before the new one is in place
    return final


def read_layout(ckpt_dir: Path) -> dict:
    """The processes a checkpoint was written by ({"world_size": 1, ...} for one process)."""
    p = Path(ckpt_dir) / LAYOUT
    return json.loads(p.read_text()) if p.exists() else {"world_size": 1, "distributed": None}


def check_layout(ckpt_dir: Path, want: dict | None = None) -> None:
    """A one-line error when a checkpoint was written by another number of processes or mode:
    RNG streams and (under FSDP) weight shards belong to ranks, so only the same layout resumes
    exactly. `want`: the layout to compare with (default: this process group's)."""
    have, want = read_layout(ckpt_dir), want or dist.layout()
    if have == want or (have["world_size"] == want["world_size"] == 1):
        return
    n = have["world_size"]
    how = (f"--nproc {n} --set training.distributed={have['distributed']}" if n > 1 else "one process (no --nproc)")
    now = f"{want['world_size']} process{'es' if want['world_size'] > 1 else ''}" + (
        f" with training.distributed={want['distributed']}" if want["distributed"] else "")
    raise TunesmithError(f"{ckpt_dir}: written by {n} process{'es' if n > 1 else ''}"
                         + (f" with training.distributed={have['distributed']}" if n > 1 else "")
                         + f", resumed by {now}; a checkpoint resumes exactly only on the same layout: resume with {how}")


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
    required = FILES
    if (ckpt_dir / LAYOUT).exists():  # written by several processes: the manifest lists every file
        if manifest is None:
            return f"{MANIFEST} missing"
        required = tuple(manifest)
    for f in required:
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
    if (Path(ckpt_dir) / LAYOUT).exists():
        return _load_distributed(Path(ckpt_dir), model=model, optimizer=optimizer, scheduler=scheduler)
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


def _load_distributed(ckpt_dir: Path, *, model, optimizer=None, scheduler=None) -> dict:
    """load_checkpoint for a checkpoint written under torchrun; every rank calls it."""
    check_layout(ckpt_dir)
    if read_layout(ckpt_dir)["distributed"] == "fsdp":
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, set_model_state_dict,
                                                              set_state_dict)

        opts = StateDictOptions(ignore_frozen_params=True, strict=False)
        if optimizer is None:  # weights only (the best checkpoint, for export)
            state = {"model": get_model_state_dict(model, options=opts)}
            dcp.load(state, checkpoint_id=str(ckpt_dir / "dcp"))
            set_model_state_dict(model, state["model"], options=opts)
        else:
            msd, osd = _sharded_state(model, optimizer)
            state = {"model": msd, "optim": osd}
            dcp.load(state, checkpoint_id=str(ckpt_dir / "dcp"))
            set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"], options=opts)
    else:
        weights = load_file(str(ckpt_dir / "trainable.safetensors"))
        params = dict(model.named_parameters())
        with torch.no_grad():
            for n, t in weights.items():
                params[n].copy_(t)
        if optimizer is not None:
            optimizer.load_state_dict(torch.load(ckpt_dir / "optim.pt", weights_only=False)["optimizer"])
    if optimizer is not None:
        if scheduler is not None:
            scheduler.load_state_dict(torch.load(ckpt_dir / "schedule.pt", weights_only=False)["scheduler"])
        set_rng_state(torch.load(ckpt_dir / f"rng-{dist.rank()}.pt", weights_only=False))
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


def check_resumable(ckpt_root: Path, layout: dict | None = None) -> None:
    """Before a resume touches anything: refuse when checkpoints exist but none is intact, or
    when the newest intact one was written by another number of processes (`layout`: the
    resuming job's, default this process group's)."""
    names = _step_names(ckpt_root)
    intact = next((n for n in names if damage(Path(ckpt_root) / n) is None), None)
    if (names or read_state(ckpt_root).get("latest")) and intact is None:
        raise TunesmithError(f"{ckpt_root}: no intact checkpoint to resume from (each is damaged or missing); start over with --overwrite")
    if intact is not None:
        check_layout(Path(ckpt_root) / intact, layout)


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
            check_layout(ckpt_root / name)  # another world size is a user error, not damage
            try:
                loop = load_checkpoint(ckpt_root / name, model=model, optimizer=optimizer, scheduler=scheduler)
            except Exception as e:  # a file that passes the checks but does not load is damaged too
                why = f"does not load: {type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"
            else:
                if (name != names[0] or state.get("latest") != name) and dist.is_main():
                    warn(f"resuming from {ckpt_root / name}, the newest intact checkpoint")
                    _repoint(ckpt_root, state, name)
                return loop
        warn(f"{ckpt_root / name}: damaged ({why}); skipping it")
    if names or state.get("latest"):
        raise TunesmithError(f"{ckpt_root}: no intact checkpoint to resume from; start over with --overwrite")
    return None
