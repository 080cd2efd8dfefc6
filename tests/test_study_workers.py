"""Studies fanned out (tunesmith.study.fanout): `--workers 2` on this machine and `--ray` on a
local Ray cluster (a head and one worker node on loopback, started here) give the serial run's
results.json figures on a study of tiny arms with an `after:` chain; a worker killed with SIGKILL
and a Ctrl-C lose no finished arm, and the re-run continues to the same figures. Tuned arms'
searches on workers pick what serial searches pick; the scheduler keeps to its slots and skips
the chain of a failed arm; wrong options, a missing Ray, an unreachable cluster and an unwritable
study directory are one-line errors."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from tunesmith import cli

ROOT = Path(__file__).resolve().parents[1]
ARMS = ["zero-shot", "sft", "cpt", "cpt+sft"]


def _study(tiny_model_dir, demo_dir) -> dict:
    # output_dir is relative: each run happens in its own folder, as a user would run it.
    return {"name": "s", "output_dir": "studies", "models": [str(tiny_model_dir)], "baseline": "zero-shot",
            "data": {"train": str(demo_dir / "qa_train.jsonl"), "test": str(demo_dir / "qa_test.jsonl"),
                     "corpus": str(demo_dir / "corpus.jsonl"), "system_prompt": "Be brief."},
            "eval": {"max_new_tokens": 4, "limit": 6, "general_ability": False, "domain_adherence": False},
            "defaults": {"training.max_steps": 8, "training.batch_size": 4, "training.learning_rate": 3e-3,
                         "training.eval_every": 4, "training.save_every": 2},
            "arms": [{"name": "zero-shot", "regimen": "prompt"}, {"name": "sft", "regimen": "sft"},
                     {"name": "cpt", "regimen": "cpt", "report": False}, {"name": "cpt+sft", "regimen": "sft", "after": "cpt"}]}


def _env() -> dict:
    # This checkout's tunesmith in every process (the study, its workers, Ray's workers).
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}


def _start(folder: Path, *extra, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tunesmith", "study", str(folder.parent / "study.yaml"), "--quiet", *extra],
                            cwd=folder, env=kw.pop("env", None) or _env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def _run(folder: Path, *extra, **kw) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    p = _start(folder, *extra, **kw)
    out, _ = p.communicate(timeout=900)
    assert p.returncode == 0, out
    return out


def _figures(folder: Path) -> dict:
    """What a study measured, per arm (not its times, memory or paths, which differ by run)."""
    res = json.loads((folder / "studies" / "s" / "results.json").read_text())
    keep = ("status", "results", "extra", "vs_baseline", "pairwise", "vs_start", "overfitting", "label_counts")
    return {"arms": {a["id"]: {k: a.get(k) for k in keep} for a in res["arms"]},
            "curves": {a["id"]: a["curves"] for a in res["arms"]},
            "trained_tokens": {a["id"]: a["cost"]["trained_tokens"] for a in res["arms"]},
            "examples": res["examples"], "criteria": res["criteria"]}


def _close(got, ref, path: str = "") -> None:
    """Equal, floats to rounding: a worker may compute with fewer torch threads than the serial
    run, and a different thread count sums in another order (differences of ~1e-8 seen on CI)."""
    if isinstance(ref, float) and isinstance(got, (int, float)):
        assert got == pytest.approx(ref, rel=1e-6, abs=1e-9), path
    elif isinstance(ref, dict) and isinstance(got, dict):
        assert list(got) == list(ref), path
        for k in ref:
            _close(got[k], ref[k], f"{path}.{k}")
    elif isinstance(ref, (list, tuple)) and isinstance(got, type(ref)):
        assert len(got) == len(ref), path
        for i, (g, r) in enumerate(zip(got, ref)):
            _close(g, r, f"{path}[{i}]")
    else:
        assert got == ref, path


def _assert_same(got: dict, ref: dict) -> None:
    assert list(got["arms"]) == ["zero-shot", "sft", "cpt+sft"]
    assert all(a["status"] == "completed" for a in got["arms"].values())
    _close(got["arms"], ref["arms"], "arms")
    _close(got["examples"], ref["examples"], "examples")
    _close(got["criteria"], ref["criteria"], "criteria")
    assert got["trained_tokens"] == ref["trained_tokens"]
    # Loss curves: equal to float rounding (a worker may use fewer torch threads than the serial run)
    for arm, curves in ref["curves"].items():
        for split, points in curves.items():
            assert [s for s, _ in got["curves"][arm][split]] == [s for s, _ in points]
            assert [v for _, v in got["curves"][arm][split]] == pytest.approx([v for _, v in points], rel=1e-5)


@pytest.fixture(scope="module")
def serial(tmp_path_factory, tiny_model_dir, demo_dir) -> tuple[Path, dict]:
    """The study's folder (study.yaml) and the figures of its serial run."""
    root = tmp_path_factory.mktemp("fan")
    (root / "study.yaml").write_text(yaml.safe_dump(_study(tiny_model_dir, demo_dir)))
    # one torch thread, as each of 2 workers gets on the 2-core CI machine and each Ray task here
    _run(root / "serial", env={**_env(), "OMP_NUM_THREADS": "1"})
    return root, _figures(root / "serial")


def _wait(cond, p: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not cond():
        assert p.poll() is None, p.stdout.read()
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def _worker_training(folder: Path, p: subprocess.Popen) -> int | None:
    """The pid of a worker of study process `p` that holds a training arm's run lock, if any."""
    import psutil

    workers = {c.pid for c in psutil.Process(p.pid).children(recursive=True)}
    for arm in ("sft", "cpt", "cpt+sft"):
        lock, run = folder / "studies" / "s" / "runs" / f".{arm}.lock", folder / "studies" / "s" / "runs" / arm / "run.json"
        try:
            pid, status = int(lock.read_text()), json.loads(run.read_text()).get("status")
        except (OSError, ValueError):
            continue
        if pid in workers and status == "running":
            return pid
    return None


@pytest.mark.slow
def test_workers_match_serial_and_survive_a_killed_worker_and_ctrl_c(serial):
    root, ref = serial
    folder = root / "workers"
    folder.mkdir()
    sdir = folder / "studies" / "s"
    # 1. SIGKILL the worker training an arm: the study stops with one line; finished arms are kept
    p = _start(folder, "--workers", "2")
    found: list[int] = []
    _wait(lambda: found.append(_worker_training(folder, p)) or found[-1], p)
    os.kill(found[-1], signal.SIGKILL)
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 2 and "a worker process died" in out and "Traceback" not in out, out
    done = json.loads((sdir / "timing.json").read_text()) if (sdir / "timing.json").exists() else {}
    kept = {a: (sdir / "runs" / a / "run.json").stat().st_mtime for a in done}
    # 2. Ctrl-C (SIGINT to the terminal's process group) once another arm has finished
    # SIG_DFL first: a shell's background job inherits SIGINT ignored, and Python would keep ignoring it
    p = _start(folder, "--workers", "2", start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    _wait(lambda: len(json.loads((sdir / "timing.json").read_text()) if (sdir / "timing.json").exists() else {}) > len(done), p)
    os.killpg(p.pid, signal.SIGINT)
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 130 and "Traceback" not in out and "run the same command again" in out, out
    # 3. the re-run continues: what finished before is reused, and the figures are the serial run's
    out = _run(folder, "--workers", "2")
    assert "started" in out and "completed in" in out
    assert {a: (sdir / "runs" / a / "run.json").stat().st_mtime for a in kept} == kept
    assert set(json.loads((sdir / "timing.json").read_text())) == set(ARMS)
    _assert_same(_figures(folder), ref)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_node(args: list[str], temp: str) -> subprocess.Popen:
    """`ray start ... --block`: the node lives as long as this process, which stops it on SIGTERM."""
    ray_bin = Path(sys.executable).with_name("ray")
    cmd = [str(ray_bin), "start", *args, "--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--disable-usage-stats",
           "--object-store-memory", str(80 * 2**20), "--dashboard-agent-listen-port", str(_free_port()), "--block"]
    log = Path(temp) / f"node-{len(list(Path(temp).glob('node-*')))}.log"
    with log.open("w") as f:
        p = subprocess.Popen(cmd, env={**_env(), "RAY_TMPDIR": temp}, stdout=f, stderr=subprocess.STDOUT)
    deadline = time.time() + 180
    while "block forever" not in log.read_text():  # ray start says so once the node is up
        if p.poll() is not None or time.time() > deadline:
            p.kill()
            raise RuntimeError(f"ray start failed: {' '.join(cmd)}\n{log.read_text()[-2000:]}")
        time.sleep(0.2)
    return p


@pytest.fixture(scope="module")
def ray_cluster():
    """A head node and a worker node on loopback, 1 CPU each; stopped afterwards (their own
    processes only: other Ray clusters on the machine are left alone)."""
    pytest.importorskip("ray")
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's Unix socket paths must stay under 108 bytes
    port = _free_port()
    nodes = [_ray_node(["--head", "--port", str(port), "--include-dashboard=false", "--temp-dir", temp,
                        "--ray-client-server-port", str(_free_port())], temp)]
    try:
        nodes.append(_ray_node(["--address", f"127.0.0.1:{port}"], temp))
        yield f"127.0.0.1:{port}"
    finally:
        for p in reversed(nodes):
            p.terminate()
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        import shutil

        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_ray_cluster_matches_serial(serial, ray_cluster):
    root, ref = serial
    out = _run(root / "ray", "--ray", ray_cluster)
    assert "Ray cluster at" in out and "2 CPUs" in out and "cpt+sft" in out
    _assert_same(_figures(root / "ray"), ref)


def _cli(args: list[str], capsys) -> tuple[int, str]:
    code = cli.main(args)
    return code, capsys.readouterr().err


def test_bad_fan_out_options_give_one_line(tmp_path, capsys):
    assert _cli(["study", "x.yaml", "--workers", "2", "--ray", "h:1"], capsys) == (2, "error: --ray and --workers: use one; on a Ray cluster the cluster's CPUs set how many arms run at once\n")
    assert _cli(["study", "x.yaml", "--ray-cpus", "2"], capsys)[1].startswith("error: --ray-cpus 2: only with --ray ADDRESS")
    with pytest.raises(SystemExit) as e:
        cli.main(["study", "x.yaml", "--workers", "0"])
    assert e.value.code == 2 and "--workers" in capsys.readouterr().err


def test_without_ray_installed_ray_names_the_extra(serial, tmp_path):
    """--ray where Ray cannot be imported: one line naming the extra, a non-zero exit, no traceback."""
    root, _ = serial
    code = ("import sys; sys.modules['ray'] = None  # as if Ray were not installed\n"
            "from tunesmith.cli import main; sys.exit(main(sys.argv[1:]))")
    p = subprocess.run([sys.executable, "-c", code, "study", str(root / "study.yaml"), "--ray", "127.0.0.1:1"],
                       cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines()[-1] == "error: --ray: Ray is not installed; pip install 'tunesmith[ray]'"


def test_an_unwritable_study_directory_is_one_line(serial, tmp_path):
    root, _ = serial
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    p = subprocess.run([sys.executable, "-m", "tunesmith", "study", str(root / "study.yaml"), "--workers", "2",
                        "--set", f"output_dir={blocker}"], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().startswith(f"error: study directory {blocker}/s: not writable")


def test_tuned_arms_search_on_workers_with_the_serial_outcome(tmp_path, tiny_model_dir, demo_dir, monkeypatch):
    """The searches of tuned arms run on the workers too (one per arm, at once), and pick what
    the serial searches pick."""
    from tunesmith.study.config import load_study_config
    from tunesmith.study.fanout import FanOut
    from tunesmith.study.runner import run_study

    space = tmp_path / "few.yaml"
    space.write_text(yaml.safe_dump({"defaults": False, "params": {"prompting.shots": {"choices": [1, 2]}}}))
    d = _study(tiny_model_dir, demo_dir)
    d["arms"] = [{"name": "zero-shot", "regimen": "prompt"}, {"name": "few-shot", "regimen": "prompt", "tune": {"space": str(space)}},
                 {"name": "few-shot-b", "regimen": "prompt", "tune": {"space": str(space)}}]
    d["tune_trials"] = 2
    got = {}
    for how, fan in (("serial", None), ("workers", FanOut(workers=2))):
        (tmp_path / how).mkdir()
        monkeypatch.chdir(tmp_path / how)
        res = run_study(load_study_config(None, base=d), progress=False, fanout=fan)["results"]
        got[how] = {a["id"]: (a["tuning"] and (a["tuning"]["params"], a["tuning"]["value"]), a["results"]) for a in res["arms"]}
    _close(got["workers"], got["serial"])  # the same choices and scores (floats to rounding: threads differ)
    assert got["serial"]["few-shot"][0][0]["prompting.shots"] in (1, 2)


def test_a_ray_address_with_no_cluster_is_one_line(serial, tmp_path):
    pytest.importorskip("ray")
    root, _ = serial
    p = subprocess.run([sys.executable, "-m", "tunesmith", "study", str(root / "study.yaml"), "--ray", f"127.0.0.1:{_free_port()}"],
                       cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "no Ray cluster answers there" in p.stderr.strip().splitlines()[-1]


def test_ready_items_run_at_once_within_the_slots_and_a_failed_parent_skips_its_chain():
    """The scheduler alone, on a thread pool: items start only once their parents completed,
    never more than `slots` at once; the children of a failed item are skipped, not run."""
    import threading
    from concurrent.futures import ThreadPoolExecutor
    from types import SimpleNamespace

    from tunesmith.study.fanout import run_ready

    ex = ThreadPoolExecutor(4)
    pool = SimpleNamespace(slots=2, result=lambda fut, name: fut.result())
    lock, live, log = threading.Lock(), [0], []

    def work(name: str) -> dict:
        with lock:
            live[0] += 1
            log.append(("start", name, live[0]))
        time.sleep(0.05)
        with lock:
            live[0] -= 1
            log.append(("end", name, live[0]))
        return {"status": "failed" if name == "b" else "completed"}

    items = [SimpleNamespace(id=i, depends=d) for i, d in
             (("a", []), ("b", []), ("c", []), ("a2", ["a"]), ("b2", ["b"]), ("b3", ["b2"]), ("ac", ["a2", "c"]))]
    out = run_ready(items, pool, lambda it: ex.submit(work, it.id), lambda it, r: r)
    ex.shutdown()
    assert {k: v["status"] for k, v in out.items()} == {"a": "completed", "b": "failed", "c": "completed", "a2": "completed",
                                                        "b2": "skipped", "b3": "skipped", "ac": "completed"}
    assert max(n for kind, _, n in log if kind == "start") == 2  # two slots
    at = {(kind, name): i for i, (kind, name, _) in enumerate(log)}
    assert at[("end", "a")] < at[("start", "a2")] and at[("end", "a2")] < at[("start", "ac")] > at[("end", "c")]
    assert "builds on b," in out["b2"]["error"] and "builds on b2," in out["b3"]["error"]


def test_a_worker_dead_before_the_next_arm_is_handed_out_is_one_line():
    """The pool can break between one arm finishing and the next being submitted (seen in CI: a
    BrokenProcessPool traceback from submit). Both paths give the same one-line error."""
    from tunesmith.errors import TunesmithError
    from tunesmith.study.fanout import WORKER_DIED, LocalPool

    pool = LocalPool(1)
    try:
        dead = pool.submit(os.abort)  # the worker process dies (SIGABRT)
        with pytest.raises(TunesmithError, match="a worker process died"):
            pool.result(dead, "a")
        with pytest.raises(TunesmithError) as e:
            pool.submit(os.getpid)
        assert str(e.value) == WORKER_DIED
    finally:
        pool.close()
