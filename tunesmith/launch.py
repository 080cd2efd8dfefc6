"""`tunesmith train CONFIG --nproc N`: start the same command under torchrun on this machine and
turn torchrun's failure report into one line.

torchrun (torch.distributed.run) starts and watches the processes; this module only builds its
command line and filters what it prints. Rank 0 shares this terminal (its progress bar, its
one-line errors); the other ranks' output goes to per-rank log files. When a rank dies, torchrun
stops the others and prints its own tracebacks and tables: those are replaced by one line that
names the rank, the cause and how to continue.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from tunesmith.rundir import remove_tree

_TORCH_LOG = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ \S+:\d+\] ")
_FAILED = re.compile(r"failed \(exitcode: (-?\d+)\) local_rank: (\d+)")


def torchrun_command(nproc: int, train_args: list[str], log_dir: Path) -> list[str]:
    """torchrun's command line for `tunesmith train` with `train_args` on `nproc` local processes."""
    others = ",".join(f"{r}:3" for r in range(1, nproc))  # local ranks 1.. write to files; rank 0 to the terminal
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            f"--log-dir={log_dir}", f"--redirects={others}", "-m", "tunesmith", "train", *train_args]


def _split(buf: str) -> tuple[list[str], str]:
    """Complete pieces of terminal output, each ending in \\n or \\r (a progress bar redraws with
    \\r), and the incomplete rest."""
    pieces, start = [], 0
    for i, ch in enumerate(buf):
        if ch in "\r\n":
            pieces.append(buf[start : i + 1])
            start = i + 1
    return pieces, buf[start:]


class _Filter:
    """Passes rank 0's stderr through and keeps torchrun's own lines back."""

    def __init__(self):
        self.failure: tuple[int, int] | None = None  # (exit code, local rank) of the first failed rank
        self.in_report = False  # inside torchrun's closing traceback and table
        self.held: list[str] = []  # torchrun's lines and ranks' tracebacks, shown only when unexplained
        self.printed_error = False

    def feed(self, piece: str) -> str:
        line = piece.rstrip("\r\n")
        if self.in_report or line.startswith("Traceback (most recent call last)") and self.failure is not None:
            self.in_report = True
            self.held.append(piece)
            return ""
        if _TORCH_LOG.match(line):
            m = _FAILED.search(line)
            if m and self.failure is None:
                self.failure = (int(m.group(1)), int(m.group(2)))
            self.held.append(piece)
            return ""
        if line.startswith("[rank"):  # a rank's uncaught traceback, often only "a peer died"
            self.held.append(piece)
            return ""
        if line.startswith("error: "):
            self.printed_error = True
        return piece


def _rank_error(log_dir: Path, local_rank: int) -> str | None:
    """The one-line error a rank printed in its log, if any."""
    for p in sorted(log_dir.glob(f"*/attempt_*/{local_rank}/stderr.log")):
        lines = [ln for ln in p.read_text(errors="replace").splitlines() if ln.startswith("error: ")]
        if lines:
            return lines[-1]
    return None


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def launch(nproc: int, train_args: list[str], *, hints: tuple[str, str], resumable) -> int:
    """Run `tunesmith train` under torchrun with `nproc` processes; returns its exit status.
    `hints`: the commands that resume the run and that start it again; `resumable()` says
    whether the run now has a checkpoint (which of the two to show)."""
    log_dir = Path(tempfile.mkdtemp(prefix="tunesmith-ranks-"))
    env = dict(os.environ)
    # Each process gets its share of the cores (torchrun would set 1 and print a banner).
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    proc = subprocess.Popen(torchrun_command(nproc, train_args, log_dir), stderr=subprocess.PIPE, env=env)
    filt, rest = _Filter(), ""
    try:
        while True:
            chunk = os.read(proc.stderr.fileno(), 65536)
            if not chunk:
                break
            pieces, rest = _split(rest + chunk.decode(errors="replace"))
            for piece in pieces:
                out = filt.feed(piece)
                if out:
                    sys.stderr.write(out)
                    sys.stderr.flush()
        code = proc.wait()
    except KeyboardInterrupt:  # torchrun got the Ctrl-C too and stops the ranks
        proc.wait()
        raise
    if rest:
        sys.stderr.write(filt.feed(rest))
    if code == 0:
        remove_tree(log_dir, log_dir.parent)
        return 0
    again = f"continue with `{hints[0]}`" if resumable() else f"no checkpoint was written: run `{hints[1]}` again"
    if filt.failure is None:  # torchrun itself failed: show what it said
        sys.stderr.write("".join(filt.held[-20:]))
        print(f"error: training stopped: torchrun exited with code {code} (per-rank logs: {log_dir})", file=sys.stderr)
        return code or 1
    status, rank = filt.failure
    keep_logs = False
    if status < 0:
        print(f"error: training stopped: rank {rank} was killed ({_signal_name(-status)}) and torchrun stopped the "
              f"other ranks; {again}", file=sys.stderr)
    elif rank != 0 or not filt.printed_error:
        why = _rank_error(log_dir, rank)
        if why and not filt.printed_error:
            print(f"{why} (rank {rank})", file=sys.stderr)
        elif not why:
            keep_logs = True
            sys.stderr.write("".join(p for p in filt.held if p.startswith("[rank")))
            print(f"error: training stopped: rank {rank} failed with exit code {status} (its output: "
                  f"{log_dir}/*/attempt_0/{rank}/); {again}", file=sys.stderr)
    if not keep_logs:
        remove_tree(log_dir, log_dir.parent)
    return code or 1
