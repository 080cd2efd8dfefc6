"""Run untrusted, model-generated Python in a throw-away, resource-limited child process.

Code-generation tasks are scored by executing the model's code against the task's tests;
that code may loop forever, fork-bomb, allocate the machine's memory, delete files or
open sockets. `run_program` runs it in layers, each of which degrades gracefully:

1. a fresh process in its own session/process group, killed (SIGKILL) at a wall-clock
   deadline, and every process it left behind swept afterwards;
2. rlimits set in the child before exec: address space, CPU, file size, processes,
   open files, no core dumps;
3. the run as a whole: `memory_mb` bounds the memory of all its processes together, by
   a memory cgroup where one can be created (hard, kernel-enforced), else by a watchdog
   that sums their Pss every 50 ms and kills the run past the limit (see sandbox_bounds);
4. when root: a new network namespace (only a loopback that is down) and a private
   mount namespace in which every host mount is read-only, /tmp, /var/tmp and /dev/shm
   are empty tmpfs and the working directory is a size-capped tmpfs: nothing the code
   writes reaches the host (/run/lock and any other world-writable dir included), and
   what it writes is capped at 3 x 16 MiB + max(64, 4 x max_file_mb) MiB in at most
   3 x 4096 + 16384 files, each file at most max_file_mb (RLIMIT_FSIZE);
5. when root: a new IPC namespace (the run's SysV shared memory, semaphores and message
   queues die with it; inside it SysV shm is capped at `memory_mb`) and a new PID
   namespace with its own /proc, so the code sees only its own processes (not the host's
   command lines), and when its init exits the kernel kills everything left inside;
6. when root: the code runs as a one-off unprivileged uid, so file permissions protect
   the host's files and RLIMIT_NPROC (ignored for root) bounds forks;
7. a prelude in the child, in the style of human-eval's `reliability_guard`: it disables
   fork/exec/kill/subprocess/sockets and confines deletes and renames to the work dir.
   It is defence in depth only (`import posix` bypasses it); the layers above are the
   protection.

Where namespaces are not permitted (not root, or a container that forbids unshare) the
guarantee shrinks to 1, 2, 3 and 7, plus the network and IPC namespaces where user
namespaces allow them: then the code can read other processes' command lines in /proc,
files it writes outside the work dir (e.g. in /tmp or /run/lock) may persist, each capped
by RLIMIT_FSIZE only, and SysV segments it creates are removed after the run (those of its
process group or uid) rather than confined. Where only the read-only remount or the PID
namespace is refused, the rest is kept (host mounts then stay writable where permissions
allow, or /proc shows host processes). `sandbox_capabilities()` says which layers work on
this machine (probed once, strongest first).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import math
import os
import pwd
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace

from tunesmith.eval.sandbox_bounds import (MemoryCgroup, MemoryWatchdog, mounts, processes,
                                           remove_run_segments, shm_segments)

TAIL_BYTES = 4096
MAX_OPEN_FILES = 256
# One-off uids come from a range no distribution or systemd allocates (1.9e9 .. +1M):
# a uid nobody else has means RLIMIT_NPROC counts only this run's processes and the
# post-run sweep "kill every process of this uid" cannot touch anything else.
UID_BASE, UID_SPAN = 1_900_000_000, 1 << 20
PRELUDE_MESSAGE = "disabled inside the tunesmith sandbox"

_CLONE_NEWNS, _CLONE_NEWNET, _CLONE_NEWUSER = 0x00020000, 0x40000000, 0x10000000
_CLONE_NEWIPC, _CLONE_NEWPID = 0x08000000, 0x20000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REMOUNT = 0x1, 0x2, 0x4, 0x8, 0x20
_MS_BIND, _MS_REC, _MS_PRIVATE = 0x1000, 0x4000, 0x40000
# Per-mount flags a read-only remount must keep: in a user namespace they may be locked,
# and clearing a locked flag fails with EPERM.
_KEEP_FLAGS = {"nodev": 0x4, "noexec": 0x8, "noatime": 0x400, "nodiratime": 0x800,
               "relatime": 1 << 21, "strictatime": 1 << 24}
_SHARED_TMP_DIRS = ("/tmp", "/var/tmp", "/dev/shm")

# Runs in the child before the program: compile it (a SyntaxError fails the item), disable
# process, signal and privilege calls and sockets, confine deletions and renames to the
# work dir (so tempfile keeps working), then run it with fresh globals.
_RUNNER = r"""
import builtins, os, shutil, socket, subprocess, sys
def _blocked(*args, **kwargs):
    raise PermissionError(__MESSAGE__)
_WORK = os.path.realpath(os.getcwd()) + os.sep
def _inside(path, dir_fd):
    if isinstance(path, int):
        return os.path.realpath(f"/proc/self/fd/{path}").startswith(_WORK)
    path = os.fsdecode(path)
    if dir_fd is not None:
        path = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), path)
    head, tail = os.path.split(os.path.abspath(path))
    return os.path.join(os.path.realpath(head), tail).startswith(_WORK)
def _confine(fn, nargs):
    def guarded(*args, **kwargs):
        fds_ok = kwargs.get("src_dir_fd") is None and kwargs.get("dst_dir_fd") is None
        if not fds_ok or not all(_inside(p, kwargs.get("dir_fd")) for p in args[:nargs]):
            _blocked()
        return fn(*args, **kwargs)
    return guarded
_path = sys.argv[1]
with open(_path, encoding="utf-8") as _f:
    _code = compile(_f.read(), _path, "exec")
for _mod, _names in (
    (os, "kill killpg system popen fork forkpty posix_spawn posix_spawnp execv execve execvp execvpe "
         "execl execle execlp execlpe spawnv spawnve spawnvp spawnvpe spawnl spawnle spawnlp spawnlpe "
         "setuid setgid setsid setpgid putenv unsetenv chroot chown lchown fchown"),
    (shutil, "chown"),
    (subprocess, "Popen run call check_call check_output getoutput getstatusoutput"),
    (socket, "create_connection create_server socketpair fromfd"),
):
    for _name in _names.split():
        if hasattr(_mod, _name):
            setattr(_mod, _name, _blocked)
for _mod, _names, _n in ((os, "remove unlink rmdir removedirs truncate", 1), (shutil, "rmtree", 1),
                         (os, "rename renames replace", 2), (shutil, "move", 2)):
    for _name in _names.split():
        setattr(_mod, _name, _confine(getattr(_mod, _name), _n))
for _name in ("connect", "connect_ex", "bind", "sendto", "sendmsg"):
    setattr(socket.socket, _name, _blocked)
sys.argv = [_path]
exec(_code, {"__name__": "__main__", "__file__": _path, "__builtins__": builtins})
""".replace("__MESSAGE__", repr(PRELUDE_MESSAGE))


@dataclass
class SandboxResult:
    """Outcome of one sandboxed run; `passed` is exit status 0 within the limits."""

    passed: bool
    status: str  # "passed" | "failed" | "timeout" | "error" (sandbox could not start)
    returncode: int | None
    duration_s: float
    stdout: str  # tail, at most TAIL_BYTES
    stderr: str  # tail, at most TAIL_BYTES


@dataclass(frozen=True)
class _Layers:
    netns: bool = False
    mountns: bool = False
    drop_uid: bool = False
    ipcns: bool = False
    pidns: bool = False  # needs mountns, for the namespace's own /proc
    cgroup: bool = True  # try a memory cgroup first (False: the watchdog alone)
    readonly: bool = True  # with mountns: every host mount read-only, not just tmp dirs hidden


@dataclass
class _ChildPlan:
    """Everything the child does between fork and exec, computed in the parent so the
    forked child (possibly of a multi-threaded parent) imports and allocates little."""

    layers: _Layers
    uid: int | None
    workdir: str
    rlimits: list[tuple[int, int, int]]
    keep: list[str]  # paths re-exposed (read-only) after the tmp dirs are hidden
    hide: list[tuple[str, str]]  # (dir, tmpfs options) mounted over shared/unreachable dirs
    work_opts: str
    memory_bytes: int  # for the whole run: also the SysV shm cap in its IPC namespace
    cgroup_procs: str | None = None  # the cgroup.procs file the child joins, if any


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _sys(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(src: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    src_b, target_b, type_b, data_b = (a if a is None else a.encode() for a in (src, target, fstype, data))
    _sys(_libc().mount(src_b, target_b, type_b, ctypes.c_ulong(flags), data_b), f"mount {target}")


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _interpreter() -> str:
    # The real binary, not a venv symlink: the venv may live in a dir we hide, and with
    # -I -S the program only ever sees the standard library anyway.
    return os.path.realpath(sys.executable)


def _mount_plan(sbx: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Which dirs to cover with tmpfs, and which paths to bring back on top of them."""
    needed = [os.path.realpath(sys.base_prefix), os.path.dirname(os.path.dirname(_interpreter()))]
    keep = sorted({p for p in needed if not any(p != q and _under(p, q) for q in needed)}) + [sbx]
    hide = [(os.path.realpath(d), "mode=1777,size=16m,nr_inodes=4096") for d in _SHARED_TMP_DIRS
            if os.path.isdir(d) and not os.path.islink(d)]
    for path in keep:  # e.g. a pyenv python under /root (mode 700): unreachable once setuid
        parts = path.strip("/").split("/")
        for i in range(1, len(parts)):
            anc = "/" + "/".join(parts[:i])
            if not os.stat(anc).st_mode & 0o001:
                hide.append((anc, "mode=0755,size=1m,nr_inodes=1024"))
                break
    hide = [(d, o) for d, o in hide if not any(d != e and _under(d, e) for e, _ in hide)]
    hidden = [p for p in keep[:-1] if any(_under(p, d) for d, _ in hide)]
    return hidden + [sbx], list(dict(hide).items())


def _readonly_mounts() -> None:
    """Remount every mount of this (private) namespace read-only, so no host path the
    program could find is writable, whatever its permissions (/run/lock is 1777)."""
    for _, point, opts, _, _ in mounts():
        if not os.path.isdir(point):
            continue  # a file bind mount, or one shadowed by a later mount
        flags = _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID
        for opt in opts.split(","):
            flags |= _KEEP_FLAGS.get(opt, 0)
        try:
            _mount(None, point, None, flags)
        except OSError as err:
            if err.errno != errno.ENOENT:  # gone meanwhile: nothing to write to
                raise


def _isolate_mounts(plan: _ChildPlan) -> None:
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)  # nothing we mount propagates to the host
    fds = {p: os.open(p, os.O_PATH | os.O_DIRECTORY) for p in plan.keep}
    if plan.layers.readonly:
        _readonly_mounts()
    for directory, opts in plan.hide:
        _mount("tmpfs", directory, "tmpfs", _MS_NOSUID | _MS_NODEV, opts)
    for path, fd in fds.items():  # bring the interpreter and the sandbox dir back, read-only
        os.makedirs(path, exist_ok=True)
        _mount(f"/proc/self/fd/{fd}", path, None, _MS_BIND | _MS_REC)
        _mount(None, path, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)
        os.close(fd)
    _mount("tmpfs", plan.workdir, "tmpfs", _MS_NOSUID | _MS_NODEV, plan.work_opts)


def _cap_sysv_shm(limit_bytes: int) -> None:
    """In the run's fresh IPC namespace (these sysctls are per namespace), cap SysV shm:
    an unattached segment is in no process's memory, so only this bounds it."""
    page = os.sysconf("SC_PAGE_SIZE")
    for name, value in (("shmmax", limit_bytes), ("shmall", max(1, limit_bytes // page)), ("shmmni", 64)):
        with open(f"/proc/sys/kernel/{name}", "w", encoding="ascii") as f:
            f.write(str(value))


def _split_for_pid_namespace() -> None:
    """After unshare(CLONE_NEWPID) only children enter the new namespace: fork one to be
    its init (when init exits, the kernel kills everything left inside). This process stays
    outside as a waiter and exits the way the program did, so the caller sees its status."""
    pid = os.fork()
    if pid == 0:
        return
    try:
        # Popen returns once every copy of its exec-status pipe is closed: ours must go.
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            if sig != signal.SIGKILL:
                signal.signal(sig, signal.SIG_DFL)
            os.kill(os.getpid(), sig)
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
    finally:
        os._exit(1)


def _child_setup(plan: _ChildPlan) -> None:
    """preexec_fn: runs in the forked child, as the parent's user, just before exec."""
    if plan.cgroup_procs is not None:  # first: everything the run allocates is charged
        with open(plan.cgroup_procs, "w", encoding="ascii") as f:
            f.write(str(os.getpid()))
    layers = plan.layers
    flags = ((_CLONE_NEWNET if layers.netns else 0) | (_CLONE_NEWNS if layers.mountns else 0)
             | (_CLONE_NEWIPC if layers.ipcns else 0) | (_CLONE_NEWPID if layers.pidns else 0))
    if flags and os.geteuid() != 0:
        flags |= _CLONE_NEWUSER  # unprivileged users may still get network/IPC namespaces
    if flags:
        _sys(_libc().unshare(flags), "unshare")
    if layers.ipcns and os.geteuid() == 0:
        _cap_sysv_shm(plan.memory_bytes)
    if layers.mountns:
        _isolate_mounts(plan)
    if layers.pidns:
        _split_for_pid_namespace()  # from here on we are pid 1 of the new namespace
        _mount("proc", "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    for which, soft, hard in plan.rlimits:
        resource.setrlimit(which, (soft, hard))
    if plan.uid is not None:  # irreversible: all of real, effective and saved ids change
        os.setgroups([])
        os.setgid(plan.uid)
        os.setuid(plan.uid)
    os.chdir(plan.workdir)
    os.umask(0o077)
    os.nice(10)  # a fork bomb spinning at low priority leaves the host responsive


def _kill_pid(pid: int, uid: int) -> None:
    # A pidfd pins the process, so a recycled pid is never signalled by mistake.
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return
    try:
        if os.stat(f"/proc/{pid}").st_uid == uid:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
    except OSError:
        pass
    finally:
        os.close(fd)


def _sweep(leader: int, uid: int | None, grace_s: float = 5.0) -> int:
    """Kill the process group and every process of the one-off uid; returns how many
    were still alive at the end (0 = nothing left behind). The leader must be exited
    but unreaped, so its pid (= the pgid) cannot be recycled meanwhile."""
    deadline = time.monotonic() + grace_s
    while True:
        try:
            os.killpg(leader, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        left = [(pid, u) for pid, pgid, u in processes()
                if pid != leader and (pgid == leader or (uid is not None and u == uid))]
        for pid, u in left:
            if uid is not None and u == uid:  # escaped the group with setsid()
                _kill_pid(pid, uid)
        if not left or time.monotonic() > deadline:
            return len(left)
        time.sleep(0.005)


def _wait_exited(pid: int, deadline: float, watchdog: MemoryWatchdog | None) -> str:
    """Wait until `pid` exits without reaping it (WNOWAIT): "exited", or "timeout" at the
    deadline, or "memory" once the watchdog killed the run."""
    delay = 0.0005
    while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        if watchdog is not None and watchdog.poll():
            return "memory"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "timeout"
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.02)
    return "exited"


def _tail(path: str) -> str:
    with open(path, "rb") as f:
        f.seek(max(0, os.fstat(f.fileno()).st_size - TAIL_BYTES))
        return f.read().decode("utf-8", errors="replace")


def _pick_uid() -> int:
    busy = {u for _, _, u in processes()}
    while True:
        uid = UID_BASE + secrets.randbelow(UID_SPAN)
        try:
            pwd.getpwuid(uid)
        except KeyError:
            if uid not in busy:
                return uid


def _rlimits(timeout_s: float, memory_mb: int, cpu_s: int | None, max_file_mb: int,
             max_procs: int, own_uid_procs: int) -> list[tuple[int, int, int]]:
    cpu = cpu_s if cpu_s is not None else math.ceil(timeout_s) + 1
    mb = 1 << 20
    # soft == hard (CPU: SIGXCPU, then SIGKILL 1 s later) so the program cannot raise them
    nproc, mem, fsize = max_procs + own_uid_procs, memory_mb * mb, max_file_mb * mb
    return [(resource.RLIMIT_AS, mem, mem), (resource.RLIMIT_CPU, cpu, cpu + 1),
            (resource.RLIMIT_FSIZE, fsize, fsize), (resource.RLIMIT_NPROC, nproc, nproc),
            (resource.RLIMIT_NOFILE, MAX_OPEN_FILES, MAX_OPEN_FILES), (resource.RLIMIT_CORE, 0, 0)]


def _prepare(sbx: str, code: str, layers: _Layers, timeout_s: float, memory_mb: int, cpu_s: int | None,
             max_file_mb: int, max_procs: int, cgroup: MemoryCgroup | None) -> _ChildPlan:
    """Lay out the sandbox dir (program, work dir) and plan the child's setup."""
    os.chmod(sbx, 0o711)  # a dropped uid may traverse it, but not list or write it
    work = os.path.join(sbx, "work")
    os.mkdir(work, 0o700)
    with open(os.open(os.path.join(sbx, "program.py"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644), "w",
              encoding="utf-8", errors="replace") as f:
        f.write(code)
    uid = _pick_uid() if layers.drop_uid else None
    if uid is not None and not layers.mountns:
        os.chown(work, uid, uid)
    # RLIMIT_NPROC counts all processes of the real uid: without a one-off uid the
    # user's existing processes must fit under it too.
    own = 0 if uid is not None else sum(1 for _, _, u in processes() if u == os.getuid())
    keep, hide = _mount_plan(sbx) if layers.mountns else ([], [])
    owner = 0 if uid is None else uid
    work_opts = f"size={max(64, 4 * max_file_mb)}m,nr_inodes=16384,mode=0700,uid={owner},gid={owner}"
    limits = _rlimits(timeout_s, memory_mb, cpu_s, max_file_mb, max_procs, own)
    return _ChildPlan(layers, uid, work, limits, keep, hide, work_opts, memory_mb << 20,
                      cgroup.procs if cgroup is not None else None)


@dataclass
class _Run:
    """A started run and what must be undone after it."""

    proc: subprocess.Popen
    plan: _ChildPlan
    sbx: str
    cgroup: MemoryCgroup | None
    watchdog: MemoryWatchdog | None
    shm_before: set[int]


def _launch(code: str, layers: _Layers, limits: dict) -> _Run:
    """Create the run's cgroup and sandbox dir and start the child; undoes both on failure."""
    cgroup = MemoryCgroup.create(limits["memory_mb"] << 20) if layers.cgroup else None
    sbx = None
    try:
        sbx = tempfile.mkdtemp(prefix="tunesmith-sbx-")
        plan = _prepare(sbx, code, layers, cgroup=cgroup, **limits)
        _libc()  # loaded before fork, so the child need not dlopen
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": plan.workdir, "TMPDIR": plan.workdir,
               "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
        shm_before = {seg["shmid"] for seg in shm_segments()}
        # Output goes to files, not pipes: RLIMIT_FSIZE caps them and the parent never
        # buffers the gigabytes a hostile program may print.
        with open(os.path.join(sbx, "stdout"), "wb") as out, open(os.path.join(sbx, "stderr"), "wb") as err:
            proc = subprocess.Popen(
                [_interpreter(), "-I", "-S", "-B", "-c", _RUNNER, os.path.join(sbx, "program.py")],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=sbx, start_new_session=True,
                close_fds=True, preexec_fn=functools.partial(_child_setup, plan))
    except BaseException:
        if sbx is not None:
            _remove_tree(sbx)
        if cgroup is not None:
            cgroup.remove()
        raise
    # The watchdog bounds memory where no cgroup does, and records the run's pids for the
    # SysV cleanup where no IPC namespace confines its segments.
    watch = cgroup is None or not layers.ipcns
    limit = limits["memory_mb"] << 20 if cgroup is None else 1 << 62
    watchdog = MemoryWatchdog(limit, proc.pid, plan.uid) if watch else None
    return _Run(proc, plan, sbx, cgroup, watchdog, shm_before)


def _execute(code: str, layers: _Layers, *, timeout_s: float = 10.0, memory_mb: int = 1024,
             cpu_s: int | None = None, max_file_mb: int = 16, max_procs: int = 64) -> SandboxResult:
    if min(timeout_s, memory_mb, max_file_mb, max_procs, 1 if cpu_s is None else cpu_s) <= 0:
        raise ValueError("sandbox limits must be positive")
    start = time.monotonic()
    limits = dict(timeout_s=timeout_s, memory_mb=memory_mb, cpu_s=cpu_s, max_file_mb=max_file_mb,
                  max_procs=max_procs)
    try:
        run = _launch(code, layers, limits)
    except (OSError, subprocess.SubprocessError) as exc:
        elapsed = time.monotonic() - start
        return SandboxResult(False, "error", None, elapsed, "", f"sandbox could not start: {exc}")
    outcome = "timeout"
    try:
        outcome = _wait_exited(run.proc.pid, start + timeout_s, run.watchdog)
    finally:  # even on KeyboardInterrupt: kill everything, then remove the dir
        notes, over_memory = _clean_up(run)
        returncode = run.proc.wait()
        duration = time.monotonic() - start
        stdout, stderr = _tail(os.path.join(run.sbx, "stdout")), _tail(os.path.join(run.sbx, "stderr"))
        _remove_tree(run.sbx)
    if outcome == "memory" or over_memory:
        notes.insert(0, f"the run exceeded its memory limit ({memory_mb} MiB for all its processes together)")
    if notes:
        stderr = (stderr + "".join(f"\nsandbox: {n}" for n in notes))[-TAIL_BYTES:]
    if outcome == "timeout" or returncode == -signal.SIGXCPU:
        status = "timeout"
    else:
        status = "passed" if returncode == 0 and not (outcome == "memory" or over_memory) else "failed"
    return SandboxResult(status == "passed", status, returncode, duration, stdout, stderr)


def _clean_up(run: _Run) -> tuple[list[str], bool]:
    """Kill what is left, remove the cgroup and the run's SysV segments; returns notes for
    stderr and whether the kernel OOM-killed inside the run's cgroup."""
    notes = []
    left = _sweep(run.proc.pid, run.plan.uid)
    if left:
        notes.append(f"{left} process(es) survived SIGKILL")
    oom = False
    if run.cgroup is not None:
        run.cgroup.kill()
        oom = run.cgroup.oom_kills() > 0
        if not run.cgroup.remove():
            notes.append(f"cgroup {run.cgroup.path} could not be removed")
    if not run.plan.layers.ipcns:
        pids = (run.watchdog.seen if run.watchdog else set()) | {run.proc.pid}
        remove_run_segments(run.shm_before, run.plan.uid, pids, _libc())
    return notes, oom


def _remove_tree(path: str) -> None:
    # A program running as our own user may chmod its dirs to 000; undo that first.
    for root, dirs, _ in os.walk(path):
        for d in dirs:
            try:
                os.chmod(os.path.join(root, d), 0o700, follow_symlinks=False)
            except OSError:
                pass
    shutil.rmtree(path, ignore_errors=True)


def _works(layers: _Layers) -> bool:
    result = _execute("import collections, json, math, re\nprint('ok')\n", layers, timeout_s=10.0)
    return result.passed and result.stdout.strip() == "ok"


@functools.cache
def _layers() -> _Layers:
    """The strongest set of layers that actually runs a program on this machine."""
    if not sys.platform.startswith("linux"):
        return _Layers()
    if os.geteuid() != 0:
        for layers in (_Layers(netns=True, ipcns=True), _Layers(netns=True)):
            if _works(layers):
                return layers
        return _Layers()
    full = _Layers(True, True, True, ipcns=True, pidns=True)
    # Strongest first; each later one gives up a layer some kernels or containers refuse.
    for layers in (full, replace(full, pidns=False), replace(full, pidns=False, readonly=False)):
        if _works(layers):
            return layers
    netns, ipcns = _works(_Layers(netns=True)), _works(_Layers(ipcns=True))
    readonly = _works(_Layers(mountns=True))
    mountns = readonly or _works(_Layers(mountns=True, readonly=False))
    pidns = mountns and _works(_Layers(mountns=True, pidns=True, readonly=readonly))
    drop_uid = _works(_Layers(mountns=mountns, drop_uid=True, readonly=readonly))
    return _Layers(netns, mountns, drop_uid, ipcns, pidns, readonly=readonly)


@functools.cache
def _memory_bound() -> str:
    group = MemoryCgroup.create(64 << 20)
    if group is None:
        return "watchdog (sum of Pss every 50 ms)"
    group.remove()
    return f"cgroup v{group.version}"


def sandbox_capabilities() -> dict:
    """Which isolation layers are active here (probed once per process)."""
    layers = _layers()
    return {
        "process_group_kill": True,
        "rlimits": ["AS", "CPU", "FSIZE", "NPROC", "NOFILE", "CORE"],
        "running_as_root": os.geteuid() == 0,
        "drop_privileges": layers.drop_uid,
        "uid_range": (UID_BASE, UID_BASE + UID_SPAN - 1) if layers.drop_uid else None,
        "nproc_enforced": layers.drop_uid or os.geteuid() != 0,
        "network_namespace": layers.netns,
        "mount_namespace": layers.mountns,
        "ipc_namespace": layers.ipcns,
        "pid_namespace": layers.pidns,
        "host_mounts_read_only": layers.mountns and layers.readonly,
        "run_memory_bound": _memory_bound() if layers.cgroup else "watchdog (sum of Pss every 50 ms)",
        "network": "namespace" if layers.netns else "prelude only (bypassable)",
        "prelude": True,
        "interpreter": _interpreter(),
    }


def run_program(code: str, *, timeout_s: float = 10.0, memory_mb: int = 1024, cpu_s: int | None = None,
                max_file_mb: int = 16, max_procs: int = 64) -> SandboxResult:
    """Run `code` as a Python program in the sandbox; passes iff it exits 0 in time."""
    return _execute(code, _layers(), timeout_s=timeout_s, memory_mb=memory_mb, cpu_s=cpu_s,
                    max_file_mb=max_file_mb, max_procs=max_procs)


def run_tests(solution: str, tests: str | list[str], *, setup: str = "", **limits) -> SandboxResult:
    """Run setup + solution + tests (assert statements) as one program."""
    test_code = tests if isinstance(tests, str) else "\n".join(tests)
    return run_program("\n\n".join(part for part in (setup, solution, test_code) if part), **limits)
