"""Whole-run bounds for the code sandbox: memory summed over all of a run's processes, and
the System V shared memory a run leaves behind.

RLIMIT_AS caps one process; a program that forks six children gets six times the limit.
So the sandbox also bounds the run as a whole, with the strongest of:

* `MemoryCgroup`: a fresh memory cgroup (cgroup v2 where its memory controller can be
  delegated to a child of our cgroup, else cgroup v1's memory hierarchy) that the child
  joins before it runs anything. The kernel charges every page of every process of the
  run to it (anonymous memory, tmpfs and SysV shm pages included) and OOM-kills inside it
  past the limit: a hard bound, whatever the program does.
* `MemoryWatchdog`, the portable fallback: every `interval_s` it sums the proportional set
  size (Pss: shared pages split between their users, so forked copies are not counted
  twice) of every process of the run's process group or one-off uid and kills them all
  past the limit. The overshoot is bounded by what the run can allocate in one interval,
  and memory no process maps (an unattached SysV segment) is invisible to it, which is
  why the sandbox also caps SysV shm inside its IPC namespace.

`remove_run_segments` is the fallback where no IPC namespace is available: it removes the
SysV segments that the run created. Standard library only (no maintained library
manages cgroups v1 and v2 without a daemon, so these few file writes are ours).
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import secrets
import signal
import time

_IPC_RMID = 0


def processes() -> list[tuple[int, int, int]]:
    """(pid, pgid, uid) of every live (non-zombie) process."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            uid = os.stat(f"/proc/{name}").st_uid
        except OSError:
            continue
        if fields[0] not in (b"Z", b"X"):  # zombies are dead; init reaps them
            found.append((int(name), int(fields[2]), uid))
    return found


def _unescape(path: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), path)


def mounts() -> list[tuple[str, str, str, str, str]]:
    """(root, mount point, per-mount options, fs type, super options) from mountinfo."""
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            head, _, tail = line.partition(" - ")
            fields, rest = head.split(), tail.split()
            if len(fields) >= 6 and len(rest) >= 3:
                found.append((_unescape(fields[3]), _unescape(fields[4]), fields[5], rest[0], rest[2]))
    return found


def _write(path: str, value: str) -> None:
    with open(path, "w", encoding="ascii") as f:
        f.write(value)


def _own_cgroup(match) -> str | None:
    with open("/proc/self/cgroup", encoding="utf-8") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if match(controllers):
                return path
    return None


def _cgroup_dir(fstype: str, wants_memory: bool, own_path: str | None) -> str | None:
    """Where our own cgroup of that hierarchy appears in this mount namespace."""
    if own_path is None:
        return None
    for root, point, _, fs, sup in mounts():
        if fs == fstype and (not wants_memory or "memory" in sup.split(",")):
            if own_path == root or own_path.startswith(root.rstrip("/") + "/"):
                rel = own_path[len(root.rstrip("/")):].lstrip("/")
                path = os.path.join(point, rel) if rel else point
                if os.path.isdir(path):
                    return path
    return None


class MemoryCgroup:
    """A fresh memory cgroup for one run; `create` returns None where none can be made."""

    def __init__(self, path: str, version: int):
        self.path, self.version = path, version
        self.procs = os.path.join(path, "cgroup.procs")  # the child writes its pid here

    @classmethod
    def create(cls, limit_bytes: int) -> "MemoryCgroup | None":
        for version in (2, 1):
            try:
                group = cls._make(version, limit_bytes)
            except OSError:
                group = None
            if group is not None:
                return group
        return None

    @classmethod
    def _make(cls, version: int, limit_bytes: int) -> "MemoryCgroup | None":
        if version == 2:
            parent = _cgroup_dir("cgroup2", False, _own_cgroup(lambda c: c == ""))
            if parent is None:
                return None
            control = os.path.join(parent, "cgroup.subtree_control")
            with open(control, encoding="ascii") as f:
                if "memory" not in f.read().split():
                    _write(control, "+memory")  # fails where our cgroup holds processes
        else:
            parent = _cgroup_dir("cgroup", True, _own_cgroup(lambda c: "memory" in c.split(",")))
            if parent is None:
                return None
        path = os.path.join(parent, f"tunesmith-sbx-{secrets.token_hex(6)}")
        os.mkdir(path, 0o700)
        group = cls(path, version)
        try:
            group._limit(limit_bytes)
        except OSError:
            group.remove()
            raise
        return group

    def _limit(self, limit_bytes: int) -> None:
        files = {2: [("memory.max", True), ("memory.swap.max", False), ("memory.oom.group", False)],
                 1: [("memory.limit_in_bytes", True), ("memory.memsw.limit_in_bytes", False)]}
        values = {"memory.max": str(limit_bytes), "memory.swap.max": "0", "memory.oom.group": "1",
                  "memory.limit_in_bytes": str(limit_bytes), "memory.memsw.limit_in_bytes": str(limit_bytes)}
        for name, required in files[self.version]:
            path = os.path.join(self.path, name)
            if required or os.path.exists(path):  # swap accounting is optional in the kernel
                _write(path, values[name])

    def oom_kills(self) -> int:
        """How many processes the kernel killed for exceeding the limit."""
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        try:
            with open(os.path.join(self.path, name), encoding="ascii") as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except (OSError, ValueError):
            pass
        return 0

    def pids(self) -> list[int]:
        try:
            with open(self.procs, encoding="ascii") as f:
                return [int(x) for x in f.read().split()]
        except OSError:
            return []

    def kill(self) -> None:
        """SIGKILL every process left in the group (cgroup.kill where the kernel has it)."""
        try:
            _write(os.path.join(self.path, "cgroup.kill"), "1")
            return
        except OSError:
            pass
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def remove(self, grace_s: float = 2.0) -> bool:
        """rmdir once empty; True when gone."""
        deadline = time.monotonic() + grace_s
        while True:
            try:
                os.rmdir(self.path)
                return True
            except FileNotFoundError:
                return True
            except OSError as err:
                if err.errno != errno.EBUSY or time.monotonic() > deadline:
                    return False
            self.kill()
            time.sleep(0.01)


def _pss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:  # kernels before 4.14: resident pages, shared ones counted in each process
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class MemoryWatchdog:
    """Sums Pss over the run's processes (those of the one-off uid when there is one, else
    those of the process group) each `poll`; past the limit it kills them all."""

    def __init__(self, limit_bytes: int, leader: int, uid: int | None, interval_s: float = 0.05):
        self.limit, self.leader, self.uid, self.interval_s = limit_bytes, leader, uid, interval_s
        self.peak = 0
        self.tripped = False
        self.seen: set[int] = set()  # every pid of the run observed, for the SysV cleanup
        self._next = 0.0

    def _members(self) -> list[int]:
        # With a one-off uid, only processes that already dropped to it count: the run's
        # not-yet-exec'd fork of the parent shares the parent's pages and is not the program.
        if self.uid is not None:
            return [pid for pid, _, u in processes() if u == self.uid]
        return [pid for pid, pgid, _ in processes() if pgid == self.leader]

    def poll(self) -> bool:
        """True once the run went over the limit (and was killed); cheap between intervals."""
        now = time.monotonic()
        if self.tripped or now < self._next:
            return self.tripped
        self._next = now + self.interval_s
        members = self._members()
        self.seen.update(members)
        total = sum(_pss_bytes(pid) for pid in members)
        self.peak = max(self.peak, total)
        if total > self.limit:
            self.tripped = True
            try:
                os.killpg(self.leader, signal.SIGKILL)
            except OSError:
                pass
            for pid in members:  # also those that left the group with setsid()
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        return self.tripped


def shm_segments() -> list[dict[str, int]]:
    """The SysV shared-memory segments of our IPC namespace, from /proc/sysvipc/shm."""
    try:
        with open("/proc/sysvipc/shm", encoding="ascii") as f:
            header, *rows = f.read().splitlines()
    except OSError:
        return []
    names = header.split()
    out = []
    for row in rows:
        try:
            out.append(dict(zip(names, map(int, row.split()))))
        except ValueError:
            continue
    return out


def remove_run_segments(before: set[int], uid: int | None, pids: set[int], libc: ctypes.CDLL) -> int:
    """Remove the segments this run created (not there before, and created by its uid or
    one of its processes); returns how many. Memory goes back once nothing has them attached,
    and the sweep has killed every process that could."""
    removed = 0
    for seg in shm_segments():
        if seg.get("shmid") in before:
            continue
        if (uid is not None and seg.get("cuid") == uid) or seg.get("cpid") in pids:
            if libc.shmctl(ctypes.c_int(seg["shmid"]), _IPC_RMID, None) == 0:
                removed += 1
    return removed
