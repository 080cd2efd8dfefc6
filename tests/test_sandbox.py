"""Tests for tunesmith.eval.sandbox: hostile programs fail their item and harm nothing.

Every test runs real programs in the real sandbox. Hostile programs print their process
group and uid first, so the test can scan /proc afterwards for anything left alive.
Tests of a bypass of the in-process prelude (`import posix`, `import _socket`) are
skipped where the OS layer that should stop it is not available on this machine.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tunesmith.eval.sandbox import (
    PRELUDE_MESSAGE,
    TAIL_BYTES,
    SandboxResult,
    run_program,
    run_tests,
    sandbox_capabilities,
)

CAPS = sandbox_capabilities()
REPORT = "import os\nprint(os.getpgrp(), os.getuid(), flush=True)\n"


def live_processes(pgid: int, uid: int) -> list[int]:
    """Pids of live (non-zombie) processes in `pgid`, or owned by `uid` when that is a
    one-off sandbox uid (never our own)."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fields = Path(f"/proc/{name}/stat").read_bytes().rsplit(b")", 1)[1].split()
            owner = os.stat(f"/proc/{name}").st_uid
        except OSError:
            continue
        mine = int(fields[2]) == pgid or (uid != os.getuid() and owner == uid)
        if mine and fields[0] not in (b"Z", b"X"):
            pids.append(int(name))
    return pids


def assert_nothing_left(result: SandboxResult) -> None:
    pgid, uid = map(int, result.stdout.split()[:2])
    if pgid == 0:  # a PID namespace hides the group's leader; the one-off uid still finds all
        assert uid != os.getuid()
        pgid = -1
    assert live_processes(pgid, uid) == [], result


def test_passing_solution_passes() -> None:
    result = run_tests("def add(a, b):\n    return a + b\n", ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"],
                       setup="import math")
    assert (result.passed, result.status, result.returncode) == (True, "passed", 0), result


def test_failing_assert_fails_with_assertion_error() -> None:
    result = run_tests("def add(a, b):\n    return a - b\n", "assert add(1, 2) == 3, 'wrong sum'")
    assert not result.passed and result.status == "failed" and result.returncode == 1
    assert "AssertionError: wrong sum" in result.stderr


def test_syntax_error_fails() -> None:
    result = run_program("def broken(:\n    pass\n")
    assert result.status == "failed" and "SyntaxError" in result.stderr


def test_infinite_loop_times_out_and_group_is_gone() -> None:
    result = run_program(REPORT + "while True:\n    pass\n", timeout_s=1.0)
    assert result.status == "timeout" and not result.passed
    assert result.duration_s < 3.0
    assert_nothing_left(result)


def test_process_escaping_with_setsid_is_killed() -> None:
    if not CAPS["drop_privileges"]:
        pytest.skip("a setsid() escapee is only found by its one-off uid")
    code = REPORT + "import posix, time\nif posix.fork() == 0:\n    posix.setsid()\n    time.sleep(60)\n"
    result = run_program(code, timeout_s=5.0)
    assert result.status == "passed", result  # the program itself exits at once
    assert_nothing_left(result)


def trivial_spawn_s() -> float:
    start = time.monotonic()
    subprocess.run(["true"], check=True)
    return time.monotonic() - start


@pytest.mark.parametrize("bomb", [
    "while True:\n    os.fork()\n",  # stopped by the prelude
    # the prelude bypassed: only RLIMIT_NPROC (as a non-root uid) bounds this
    "import posix\nwhile True:\n    try:\n        posix.fork()\n    except OSError:\n        pass\n",
    "import ctypes\nlibc = ctypes.CDLL(None)\nwhile True:\n    libc.fork()\n",
])
def test_fork_bomb_fails_and_leaves_nothing(bomb: str) -> None:
    if "os.fork" not in bomb and not CAPS["nproc_enforced"]:
        pytest.skip("RLIMIT_NPROC is not enforced for root without a privilege drop")
    outcome: list[SandboxResult] = []
    runner = threading.Thread(target=lambda: outcome.append(run_program(REPORT + bomb, timeout_s=2.0)))
    runner.start()
    time.sleep(1.0)
    assert trivial_spawn_s() < 1.0  # the machine stays responsive mid-bomb
    runner.join(timeout=10)
    result = outcome[0]
    assert not result.passed and result.status in ("failed", "timeout")
    assert result.duration_s < 4.0
    assert_nothing_left(result)
    assert trivial_spawn_s() < 1.0


def test_huge_allocation_fails_fast_with_memory_error() -> None:
    result = run_program("x = bytearray(50 * 2**30)\n")
    assert result.status == "failed" and "MemoryError" in result.stderr
    assert result.duration_s < 2.0


def test_allocation_over_the_limit_fails_even_if_the_host_could_afford_it() -> None:
    result = run_program("x = bytearray(2**30)\n", memory_mb=256)  # 1 GiB: fine for the host
    assert result.status == "failed" and "MemoryError" in result.stderr


def test_writing_100mb_file_fails() -> None:
    result = run_program("with open('big.bin', 'wb') as f:\n    f.write(b'\\0' * (100 * 2**20))\n")
    assert result.status == "failed"
    assert "File too large" in result.stderr


# name -> (program, whether the prelude alone already stops it)
DELETERS = {
    "os.remove": ("import os\nos.remove({file!r})\n", True),
    "shutil.rmtree": ("import shutil\nshutil.rmtree({dir!r})\n", True),
    "pathlib.unlink": ("import pathlib\npathlib.Path({file!r}).unlink()\n", True),
    "posix.unlink (prelude bypass)": ("import posix\nposix.unlink({file!r})\n", False),
    "rm via posix.system (prelude bypass)": ("import posix\nassert posix.system('rm -r {dir}') == 0\n", False),
    "overwrite": ("open({file!r}, 'w').write('pwned')\n", False),
    "new file next to it": ("open({dir!r} + '/planted.txt', 'w').write('pwned')\n", False),
}


@pytest.mark.parametrize("how", list(DELETERS))
def test_files_outside_the_sandbox_are_untouchable(how: str, tmp_path: Path) -> None:
    template, prelude_stops_it = DELETERS[how]
    if not prelude_stops_it and not (CAPS["drop_privileges"] or CAPS["mount_namespace"]):
        pytest.skip("running unprivileged: only the prelude guards the user's own files")
    victim_dir = tmp_path / "project"
    victim_dir.mkdir()
    victim_dir.chmod(0o777)  # even a world-writable dir must be out of reach
    sentinel = victim_dir / "sentinel.txt"
    sentinel.write_text("keep me")
    result = run_program(template.format(file=str(sentinel), dir=str(victim_dir)))
    assert result.status == "failed", result
    assert sentinel.read_text() == "keep me"
    assert sorted(p.name for p in victim_dir.iterdir()) == ["sentinel.txt"]


@pytest.fixture
def listener():
    server = socket.create_server(("127.0.0.1", 0))
    server.setblocking(False)
    yield server
    server.close()


@pytest.mark.parametrize("how", [
    "import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\n",
    "import _socket\ns = _socket.socket()\ns.settimeout(2)\ns.connect(('127.0.0.1', {port}))\n",  # bypass
])
def test_network_is_unreachable(how: str, listener: socket.socket) -> None:
    if "_socket" in how and not CAPS["network_namespace"]:
        pytest.skip("no network namespace here: only the prelude blocks sockets")
    result = run_program(how.format(port=listener.getsockname()[1]), timeout_s=5.0)
    assert result.status == "failed", result
    time.sleep(0.1)
    with pytest.raises(BlockingIOError):
        listener.accept()  # nothing ever connected


def host_mounts() -> list[str]:
    return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]


@pytest.mark.parametrize("tail", ["", "raise SystemExit(3)\n", "while True:\n    pass\n"])
def test_sandbox_dir_is_removed_after_every_run(tail: str) -> None:
    mounts_before = host_mounts()
    code = "import os\nopen('scratch.txt', 'w').write('x')\nprint(os.getcwd(), flush=True)\n" + tail
    result = run_program(code, timeout_s=1.0)
    workdir = Path(result.stdout.split()[0])
    assert workdir.name == "work" and workdir.parent.name.startswith("tunesmith-sbx-")
    assert not workdir.parent.exists()
    assert host_mounts() == mounts_before  # the sandbox's tmpfs mounts never reach the host


def test_environment_is_minimal_and_home_is_inside(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNESMITH_SECRET_TOKEN", "s3cret")
    code = ("import os\nassert 'TUNESMITH_SECRET_TOKEN' not in os.environ\n"
            "assert os.environ['HOME'] == os.environ['TMPDIR'] == os.getcwd()\n"
            "import tempfile\nassert tempfile.gettempdir() == os.getcwd()\n")
    result = run_program(code)
    assert result.passed, result


def test_prelude_blocks_dangerous_calls() -> None:
    result = run_program("import subprocess\nsubprocess.run(['true'])\n")
    assert result.status == "failed" and PRELUDE_MESSAGE in result.stderr


def test_output_is_truncated_to_a_tail() -> None:
    result = run_program("print('x' * 100_000)\nprint('END')\n")
    assert result.passed and len(result.stdout) <= TAIL_BYTES and result.stdout.endswith("END\n")


def test_layers_reported_match_what_the_program_sees(tmp_path: Path) -> None:
    (tmp_path / "visible.txt").write_text("host file")
    code = ("import os, socket\nprint(os.getuid(), len(socket.if_nameindex()),"
            f" os.path.exists({str(tmp_path / 'visible.txt')!r}))\n")
    result = run_program(code)
    uid, interfaces, sees_host_tmp = result.stdout.split()
    if CAPS["drop_privileges"]:
        low, high = CAPS["uid_range"]
        assert low <= int(uid) <= high
    else:
        assert int(uid) == os.getuid()
    if CAPS["network_namespace"]:
        assert interfaces == "1"  # loopback only, and it is down
    if CAPS["mount_namespace"]:
        assert sees_host_tmp == "False"
    assert set(CAPS) >= {"drop_privileges", "network_namespace", "mount_namespace", "rlimits", "prelude"}


def test_unstartable_sandbox_reports_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", "/nonexistent/tunesmith-test")
    result = run_program("print('hi')\n")
    assert (result.status, result.passed, result.returncode) == ("error", False, None)
    assert "could not start" in result.stderr


def test_invalid_limits_are_rejected() -> None:
    with pytest.raises(ValueError):
        run_program("pass", timeout_s=0)


@pytest.mark.skipif(not CAPS["mount_namespace"], reason="needs the root-only layers")
@pytest.mark.parametrize("off", [{"pidns": False}, {"readonly": False}, {"ipcns": False},
                                 {"cgroup": False}, {"pidns": False, "readonly": False}])
def test_each_fallback_layer_set_still_runs_programs(off):
    """The weaker layer sets that _layers() falls back to must work where the full set is
    refused, so a machine that forbids one namespace still gets all the others."""
    import dataclasses

    from tunesmith.eval import sandbox

    layers = dataclasses.replace(sandbox._layers(), **off)
    result = sandbox._execute("import os\nprint(len([p for p in os.listdir('/proc') if p.isdigit()]))\n", layers)
    assert result.passed, result
    few = int(result.stdout) < 5
    assert few == layers.pidns  # only a PID namespace hides the host's processes
