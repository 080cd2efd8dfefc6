"""Safety of run directories: nothing is lost, nothing escapes `<output_dir>/`.

- `check_name`: a run, arm or result name is one plain path component (no `..`, `/`, `.`),
  so that `<output_dir>/<name>` can never point at the project folder or a sibling run.
- `remove_tree`: the only way tunesmith deletes a folder; it resolves the path and refuses
  anything not strictly inside the folder it is meant to be in.
- `run_lock`: one process per run directory (an OS lock beside it, released by the kernel when
  the holder dies, so a crash never leaves a stale lock).
- `replacing`: `--overwrite` moves the old run aside and restores it when the new one fails;
  the old run is deleted only after the new one succeeded.
- `disk_full`: a full disk reported as one line naming the folder and the free space.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import sys
from pathlib import Path

from tunesmith.errors import ConfigError, TunesmithError

_BAD_CHARS = set('/\\\0')


def check_name(name, field: str = "name") -> None:
    """Raise a ConfigError unless `name` is one safe path component."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{field}: must be a non-empty name, e.g. {field}: my-run")
    bad = sorted({c for c in name if c in _BAD_CHARS or ord(c) < 32})
    if name in (".", "..") or bad or name != name.strip() or name.startswith("."):
        why = f"contains {', '.join(repr(c) for c in bad)}" if bad else "is not a plain folder name"
        raise ConfigError(f"{field}: {name!r} {why}; use letters, digits, '-', '_' or '.' (not leading), e.g. my-run")


def is_inside(path: Path, parent: Path) -> bool:
    """Whether `path` resolves strictly inside `parent` (symbolic links followed)."""
    p, root = Path(path).resolve(), Path(parent).resolve()
    return p != root and root in p.parents


def remove_tree(path: Path, inside: Path) -> None:
    """shutil.rmtree, but only of a folder strictly inside `inside`; anything else is refused."""
    path = Path(path)
    if path.is_symlink() or not is_inside(path, inside):
        raise TunesmithError(f"refusing to delete {path}: it is not a folder inside {inside}")
    if path.exists():
        shutil.rmtree(path)


def warn(msg: str) -> None:
    """One warning line on stderr (the CLI silences Python's warnings module)."""
    print(f"warning: {msg}", file=sys.stderr, flush=True)


def _lock_path(run: Path) -> Path:
    # Beside the run, not in it: the lock must stay put while --overwrite moves the run aside.
    return run.parent / f".{run.name}.lock"


@contextlib.contextmanager
def run_lock(run: Path):
    """Hold an exclusive lock on `run` for the block; a second process gets a one-line refusal."""
    import fcntl

    run = Path(run)
    run.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(_lock_path(run), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise TunesmithError(f"{run}: another tunesmith process (pid {holder}) is using this run; "
                                 "wait for it to finish or stop it, then run again") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield run
    finally:
        os.close(fd)  # closing releases the lock


def _status(run: Path) -> str | None:
    try:
        return json.loads((run / "run.json").read_text()).get("status")
    except (OSError, ValueError):
        return None


def failed_start(run: Path) -> bool:
    """A run that never wrote a checkpoint nor finished: a start that failed (or was killed
    before its first checkpoint). Replacing it loses nothing."""
    return (run / "run.json").exists() and _status(run) != "completed" and not (run / "checkpoints" / "state.json").exists()


def recover_replacement(run: Path) -> None:
    """Put back the run an interrupted --overwrite moved aside (SIGKILL between the move and the
    new run's success), unless the new run already holds a checkpoint worth resuming or finished:
    then the backup is kept and said so. Call with the run's lock held."""
    run = Path(run)
    backup = run.parent / f".{run.name}.replaced"
    if not backup.is_dir() or _status(run) == "completed":
        return
    if run.exists() and not failed_start(run):
        warn(f"{backup} holds the run an interrupted --overwrite replaced; it is kept (delete it once {run} is what you want)")
        return
    if run.exists():
        remove_tree(run, run.parent)
    os.replace(backup, run)
    warn(f"restored {run} from {backup.name}: an --overwrite was interrupted before the new run saved a checkpoint")


@contextlib.contextmanager
def replacing(run: Path, overwrite: bool):
    """With `overwrite`, move an existing run aside for the block: on success delete it, on any
    error (or interrupt) put it back. A backup left by a killed replacement is the last good
    run: it is kept, and the half-made replacement is what gets discarded."""
    run = Path(run)
    backup = run.parent / f".{run.name}.replaced"
    if not overwrite or not run.exists():
        yield
        return
    if backup.exists():
        if _status(run) == "completed":
            remove_tree(backup, run.parent)
        else:
            remove_tree(run, run.parent)
    if run.exists():
        os.replace(run, backup)
    try:
        yield
    except BaseException:
        if run.exists():
            remove_tree(run, run.parent)
        if backup.exists():
            os.replace(backup, run)
        raise
    if backup.exists():
        remove_tree(backup, run.parent)


_FULL = ("No space left", "StorageFull", "os error 28", "unexpected pos", "file write failed")


def disk_full(exc: BaseException, path: Path) -> TunesmithError | None:
    """A one-line error when `exc` is a write that failed for lack of space; else None.
    torch reports a full disk as RuntimeError ('unexpected pos ...', 'file write failed'),
    safetensors as its own error type naming the OS error."""
    full = (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)) or any(s in str(exc) for s in _FULL)
    if not full:
        return None
    try:
        free = shutil.disk_usage(path).free / 2**20
    except OSError:
        free = 0.0
    return TunesmithError(f"no space left on {path}: {free:.0f} MB free; free some space, then run again (with --resume to continue a run)")
