"""Probes for issue 11 ("nothing lost, nothing escapes"): hostile programs through the real
sandbox, and hostile judge endpoints over real loopback HTTP.

Each sandbox probe runs a program that tries to break one whole-run bound (memory summed
over many processes, SysV shared memory left behind, files in writable host paths, other
processes' command lines, a file-count and size bomb) and asserts, from the host, that
the sandbox contained it and left nothing behind. Where a probe also runs through a
fallback (the memory watchdog instead of a cgroup, SysV clean-up instead of an IPC
namespace), the fallback is the real code path with the stronger layer switched off.

The judge probes use servers that trickle bytes, hang or refuse connections, and assert
that the total time is bounded and that failed judgments are never kept as final.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from openai_server import ALWAYS, OpenAIStubServer
from probes_judge import HostileServer, dead_url

from tunesmith.eval import sandbox
from tunesmith.eval.judge import Judge, JudgeConfig
from tunesmith.eval.sandbox import run_program, sandbox_capabilities

CAPS = sandbox_capabilities()
RIGHT = {"question": "What is the capital of France?", "answer": "It is Paris.", "reference": "Paris"}
WRONG = {"question": "What is the capital of France?", "answer": "It is Lyon.", "reference": "Paris"}
MB = 1 << 20


def run_with(variant: str, code: str, **limits) -> sandbox.SandboxResult:
    """The default sandbox, or the same with one stronger layer off (its fallback runs)."""
    if variant == "default":
        return run_program(code, **limits)
    layers = sandbox._layers()
    off = {"watchdog": {"cgroup": False}, "no_ipcns": {"ipcns": False}}[variant]
    if not all(hasattr(layers, name) for name in off):
        pytest.skip(f"this sandbox has no {variant} fallback")
    return sandbox._execute(code, dataclasses.replace(layers, **off), **limits)


def bounded(limit_s: float, fn, *args, **kwargs):
    """fn(*args, **kwargs), failing the probe (not hanging it) when it runs past limit_s."""
    box: dict = {}

    def target() -> None:
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as err:  # re-raised in the test's thread
            box["error"] = err

    start = time.monotonic()
    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(limit_s)
    if worker.is_alive():
        pytest.fail(f"still running after {limit_s} s: the cost is unbounded")
    if "error" in box:
        raise box["error"]
    return box["value"], time.monotonic() - start


def uid_processes(uid: int) -> list[int]:
    """Live processes of `uid` (a one-off sandbox uid, never ours)."""
    assert uid != os.getuid()
    found = []
    for name in os.listdir("/proc"):
        try:
            if name.isdigit() and os.stat(f"/proc/{name}").st_uid == uid:
                state = Path(f"/proc/{name}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
                if state not in (b"Z", b"X"):
                    found.append(int(name))
        except OSError:
            continue
    return found


def first_int(stdout: str, key: str) -> int:
    for line in stdout.splitlines():
        if line.startswith(key + " "):
            return int(line.split()[1])
    raise AssertionError(f"no '{key}' line in {stdout!r}")


needs_uid = pytest.mark.skipif(not CAPS["drop_privileges"], reason="probes identify the run by its one-off uid")

# ---------------------------------------------------------------- memory across processes

MANY_CHILDREN = r"""
import os, posix, time
print("uid", os.getuid(), flush=True)
N, STEP, STEPS = 6, 32 << 20, 6          # six children x 192 MiB, each under RLIMIT_AS
pids = []
for i in range(N):
    pid = posix.fork()
    if pid == 0:
        held = [b"x" * STEP for _ in range(STEPS)]   # bytes * n writes every page
        open(f"held-{i}", "w").close()
        deadline = time.time() + 3
        while time.time() < deadline and len([f for f in os.listdir(".") if f.startswith("held-")]) < N:
            time.sleep(0.02)
        all_held = len([f for f in os.listdir(".") if f.startswith("held-")]) == N
        posix._exit(0 if all_held else 3)
    pids.append(pid)
codes = [posix.waitpid(pid, 0)[1] for pid in pids]
if all(c == 0 for c in codes):
    print(f"ESCAPED: {N} children held {N * STEP * STEPS >> 20} MiB at once", flush=True)
"""


@needs_uid
@pytest.mark.parametrize("variant", ["default", "watchdog"])
def test_probe_many_children_cannot_hold_more_than_the_run_limit(variant):
    result = run_with(variant, MANY_CHILDREN, memory_mb=256, timeout_s=10)
    assert "ESCAPED" not in result.stdout, result
    assert not result.passed and "exceeded its memory limit" in result.stderr, result
    assert uid_processes(first_int(result.stdout, "uid")) == []


# ---------------------------------------------------------------- SysV shared memory

SYSV_SHM = r"""
import ctypes, os
print("uid", os.getuid(), flush=True)
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
SIZE, made = 32 << 20, 0
for _ in range(16):                        # 512 MiB, twice the run's limit
    shmid = libc.shmget(0, ctypes.c_size_t(SIZE), 0o1600)   # IPC_PRIVATE, IPC_CREAT|0600
    if shmid < 0:
        break
    addr = libc.shmat(shmid, None, 0)
    if addr in (None, ctypes.c_void_p(-1).value):
        break
    ctypes.memset(addr, 7, SIZE)           # make the pages real
    libc.shmdt(ctypes.c_void_p(addr))      # detached: in no process's memory any more
    made += 1
    print("made", made, flush=True)
print("total", made, flush=True)
"""


def host_segments(uid: int) -> list[int]:
    """Ids of the host's SysV segments created by `uid` (read here, not through the code
    under test); removed again so a failing probe does not leave memory pinned."""
    header, *rows = Path("/proc/sysvipc/shm").read_text().splitlines()
    names = header.split()
    ids = [int(r["shmid"]) for r in (dict(zip(names, row.split())) for row in rows) if int(r["cuid"]) == uid]
    for shmid in ids:
        subprocess.run(["ipcrm", "-m", str(shmid)], check=False, capture_output=True)
    return ids


@needs_uid
@pytest.mark.parametrize("variant", ["default", "no_ipcns"])
def test_probe_sysv_shm_is_capped_and_not_left_behind(variant):
    result = run_with(variant, SYSV_SHM, memory_mb=256, timeout_s=10)
    uid = first_int(result.stdout, "uid")
    made = max([int(line.split()[1]) for line in result.stdout.splitlines() if line.startswith("made ")] or [0])
    assert host_segments(uid) == [], "segments outlived the sandbox"
    assert made * 32 <= 256, f"{made * 32} MiB of SysV shm under a 256 MiB run limit"
    assert uid_processes(uid) == []


# ---------------------------------------------------------------- writable host paths

KNOWN_WRITABLE = ["/run/lock", "/var/lock", "/tmp", "/var/tmp", "/dev/shm", "/dev/mqueue", "/var/crash",
                  "/var/mail", "/var/spool/mail", "/run/user", "/"]

WRITE_EVERYWHERE = r"""
import os
MARK = __MARK__
KNOWN = __KNOWN__
found, seen = [], 0
def try_write(d):
    try:
        with open(os.path.join(d, MARK), "w") as f:
            f.write("x")
        found.append(d)
    except OSError:
        pass
for d in KNOWN:
    try_write(d)
for root, dirs, _ in os.walk("/"):
    dirs[:] = [x for x in dirs if os.path.join(root, x) not in ("/proc", "/sys")]
    if root.count("/") >= 3:
        dirs[:] = []
    seen += 1
    if seen > 3000:
        break
    if root not in KNOWN and os.access(root, os.W_OK):
        try_write(root)
for d in found:
    print("wrote", d, flush=True)
"""


@needs_uid
def test_probe_no_writable_host_path_keeps_a_file():
    mark = f"tunesmith-probe-{secrets.token_hex(6)}"
    code = WRITE_EVERYWHERE.replace("__MARK__", repr(mark)).replace("__KNOWN__", repr(KNOWN_WRITABLE))
    result = run_program(code, timeout_s=15)
    reported = [line.split(" ", 1)[1] for line in result.stdout.splitlines() if line.startswith("wrote ")]
    dirs = {os.path.realpath(d) for d in (*KNOWN_WRITABLE, *reported)}
    left = [os.path.join(d, mark) for d in sorted(dirs) if os.path.exists(os.path.join(d, mark))]
    for path in left:  # never leave the probe's own files on the host, even when it fails
        os.remove(path)
    assert result.returncode == 0, result
    assert left == [], f"files outlived the sandbox: {left}"


# ---------------------------------------------------------------- other processes

READ_CMDLINES = r"""
import os
pids = [p for p in os.listdir("/proc") if p.isdigit()]
lines = []
for p in pids:
    try:
        with open(f"/proc/{p}/cmdline", "rb") as f:
            lines.append(f.read().replace(b"\0", b" ").decode(errors="replace"))
    except OSError:
        pass
print("pids", len(pids))
print("SEEN" if any(__MARK__ in line for line in lines) else "not seen")
"""


def test_probe_host_command_lines_are_invisible():
    mark = f"tunesmith-secret-{secrets.token_hex(6)}"
    host = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", mark])
    try:
        time.sleep(0.2)
        result = run_program(READ_CMDLINES.replace("__MARK__", repr(mark)), timeout_s=10)
    finally:
        host.kill()
        host.wait()
    assert result.returncode == 0, result
    assert "not seen" in result.stdout, f"sandboxed code read a host process's command line: {result.stdout}"
    assert first_int(result.stdout, "pids") < 5


# ---------------------------------------------------------------- file-count and size bomb

BOMB = r"""
import os
MARK = __MARK__
dirs = [os.getcwd(), "/tmp", "/var/tmp", "/dev/shm", "/run/lock"]
files = size = 0
for d in dirs:
    for i in range(5000):                  # many small files
        try:
            fd = os.open(os.path.join(d, f"{MARK}-{i}"), os.O_WRONLY | os.O_CREAT, 0o600)
        except OSError:
            break
        files += 1
        try:
            size += os.write(fd, b"x")
        except OSError:
            pass
        os.close(fd)
    for i in range(12):                    # big files, each up to RLIMIT_FSIZE (SIGXFSZ is ignored)
        try:
            fd = os.open(os.path.join(d, f"{MARK}-big-{i}"), os.O_WRONLY | os.O_CREAT, 0o600)
        except OSError:
            break
        try:
            for _ in range(32):
                size += os.write(fd, b"\0" * (1 << 20))
        except OSError:
            pass
        os.close(fd)
print("files", files)
print("bytes", size)
"""


@needs_uid
def test_probe_file_bomb_is_capped_and_leaves_nothing():
    mark = f"tunesmith-bomb-{secrets.token_hex(6)}"
    result = run_program(BOMB.replace("__MARK__", repr(mark)), timeout_s=20, max_file_mb=16)
    host = ["/tmp", "/var/tmp", "/dev/shm", "/run/lock"]
    left = [os.path.join(d, n) for d in host for n in os.listdir(d) if n.startswith(mark)]
    for path in left:
        os.remove(path)
    assert left == [], f"{len(left)} bomb file(s) outlived the sandbox"
    files, size = first_int(result.stdout, "files"), first_int(result.stdout, "bytes")
    assert files <= 3 * 4096 + 16384, files
    assert size <= (3 * 16 + 64) * MB, f"{size >> 20} MiB written"


# ---------------------------------------------------------------- judge probes


def _judge(base_url: str, tmp_path, **kw) -> Judge:
    kw = {"base_url": base_url, "cache_dir": str(tmp_path / "judge-cache"), "api_key_env": None,
          "backoff_s": 0.01, **kw}
    known = {f.name for f in dataclasses.fields(JudgeConfig)}  # probes also run against older code
    return Judge(JudgeConfig(**{k: v for k, v in kw.items() if k in known}))


@pytest.mark.parametrize("mode", ["trickle_body", "trickle_headers", "trickle_error"])
def test_probe_judge_trickling_server_is_cut_at_the_total_deadline(tmp_path, mode):
    """Every read returns a byte in time, so a per-read timeout never fires; the request
    as a whole must still end at timeout_s."""
    with HostileServer(mode, interval_s=0.2) as srv:
        judge = _judge(srv.base_url, tmp_path, timeout_s=1.0, max_retries=0)
        (result,), elapsed = bounded(10, judge.score, [RIGHT])
    want = "HTTP 500" if mode == "trickle_error" else "no complete reply within 1 s"
    assert result.score is None and want in result.error, result
    assert elapsed < 2.5, elapsed
    assert not list((tmp_path / "judge-cache").glob("*.json"))  # a failure is never cached


def test_probe_judge_hung_server_trips_the_breaker(tmp_path):
    """A hung judge and 20 items: without a breaker that is 20 x 5 attempts x timeout."""
    with HostileServer("silent") as srv:
        judge = _judge(srv.base_url, tmp_path, timeout_s=0.3, max_retries=4, breaker_failures=3,
                       concurrency=2)
        results, elapsed = bounded(20, judge.score, [dict(RIGHT, answer=f"Paris {i}") for i in range(20)])
        connections = srv.connections
    assert all(r.score is None for r in results)
    assert sum("circuit breaker open" in r.error for r in results) >= 15
    assert connections <= 5 and elapsed < 3.0, (connections, elapsed)
    assert judge.stats["failures"] == 20


def test_probe_judge_refused_connections_fail_fast(tmp_path):
    judge = _judge(dead_url(), tmp_path, timeout_s=5.0, max_retries=4, breaker_failures=3,
                   breaker_cooldown_s=60.0, concurrency=1)
    results, elapsed = bounded(20, judge.score, [dict(RIGHT, answer=f"Paris {i}") for i in range(50)])
    assert all(r.score is None for r in results) and elapsed < 2.0, elapsed
    assert judge.stats["requests"] == 3  # then the breaker answered for the judge


def test_probe_judge_breaker_closes_when_the_judge_recovers(tmp_path):
    with OpenAIStubServer(fail_first=2) as srv:
        judge = _judge(srv.base_url, tmp_path, max_retries=0, breaker_failures=2,
                       breaker_cooldown_s=0.2)
        first = judge.score([RIGHT, WRONG], rubric="correctness")
        assert all(r.error for r in first)
        time.sleep(0.3)
        again = judge.score([RIGHT, WRONG], rubric="correctness")
    assert [r.score for r in again] == [5.0, 1.0]


def test_probe_eval_with_dead_judge_is_not_reused(tmp_path, tiny_model_dir, demo_dir):
    """An evaluation scored while the judge was down is provisional: once the judge is
    back, the same evaluation is recomputed (not served from the result cache)."""
    from tunesmith import api

    def evaluate(base_url: str) -> dict:
        # timeout and retries set the way `tunesmith eval --set` does
        judge = {"base_url": base_url, "model": "stub", "api_key_env": None, "cache_dir": str(tmp_path / "jc")}
        return api.evaluate(str(tiny_model_dir), None, ["judge.max_retries=0", "judge.timeout_s=2"],
                            progress=False, data=str(demo_dir / "qa_test.jsonl"), task="qa", limit=2,
                            max_new_tokens=4, output_dir=str(tmp_path), judge=judge)

    with OpenAIStubServer(fail_first=ALWAYS) as down:
        first = evaluate(down.base_url)
        assert down.count == 2  # max_retries=0 reached the judge: one attempt per item
    assert first["helpfulness"]["helpfulness"]["n_failed"] == 2 and first["helpfulness"]["judgments_failed"] == 2
    with OpenAIStubServer() as up:
        second = evaluate(up.base_url)
        assert up.count == 2
    assert not second["cached"] and second["helpfulness"]["helpfulness"]["n"] == 2
    assert second["helpfulness"]["judgments_failed"] == 0
    with OpenAIStubServer() as up:
        assert evaluate(up.base_url)["cached"] and up.count == 0  # complete results are reused
