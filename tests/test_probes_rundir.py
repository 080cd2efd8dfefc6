"""Probes of a hostile or careless user against run directories (issue 11: nothing lost,
nothing escapes), each through the real CLI in a subprocess: bad run, arm and result names,
--overwrite with a bad config, a second process on a live run, damaged checkpoints and metrics,
a full disk, and evaluations of one dataset with different settings.

Every probe asserts its outcome: a refusal is one `error:` line (no traceback) with a non-zero
exit, a recovery succeeds, and in both cases nothing outside the run is touched and nothing
finished is lost. With TUNESMITH_PROBE_LOG=file each probe appends {"probe", "outcome"} to it,
which is how the before/after counts of the issue were made."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

QUIET = ("--quiet",)


# -- helpers ---------------------------------------------------------------------------------

def cli(*args, cwd=None, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("TUNESMITH_DEBUG", None)
    # Not from the checkout's root: `python -m` puts the working folder first on sys.path, and
    # PYTHONPATH must decide which tunesmith runs (how the before/after counts were made).
    return subprocess.run([sys.executable, "-m", "tunesmith", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd or tempfile.gettempdir(), env=env)


def digest(root: Path) -> dict[str, str]:
    """Every file under root and its sha256 (what 'nothing lost' compares)."""
    root = Path(root)
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def kept(before: dict[str, str], root: Path) -> bool:
    """Every file that was there is still there, unchanged (new files are not a loss)."""
    after = digest(root)
    return all(after.get(k) == v for k, v in before.items())


def outcome(res, *, want_error: bool, intact: bool, right) -> str:
    if res is None:
        return "hang"
    if "Traceback" in res.stderr:
        return "traceback"
    if not intact:
        return "data lost"
    if not want_error:
        return ("ok" if right(res) else "wrong success") if res.returncode == 0 else "wrong failure"
    if res.returncode == 0:
        return "wrong success"
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    return "clean error" if len(errors) == 1 and lines[-1] == errors[0] else "messy error"


def probe(name: str, args, *, want_error: bool, intact=lambda: True, right=lambda res: True, cwd=None, timeout: float = 300,
          match: str | None = None):
    """Run one CLI probe and classify it: clean error / ok, or traceback, hang, data lost,
    wrong success (exit 0 with a wrong result or where a refusal was due), wrong failure."""
    try:
        res = cli(*args, cwd=cwd, timeout=timeout)
    except subprocess.TimeoutExpired:
        res = None
    kind = outcome(res, want_error=want_error, intact=intact(), right=right)
    if os.environ.get("TUNESMITH_PROBE_LOG"):
        with open(os.environ["TUNESMITH_PROBE_LOG"], "a") as f:
            f.write(json.dumps({"probe": name, "outcome": kind}) + "\n")
    detail = (res.stderr[-3000:] if res is not None else "timed out")
    assert kind == ("clean error" if want_error else "ok"), f"{name}: {kind}\n{detail}"
    if match:
        assert match in res.stderr, f"{name}: {match!r} not in\n{res.stderr}"
    return res


def write_config(path: Path, tiny, demo, out, **training) -> Path:
    tr = {"max_steps": 4, "batch_size": 4, "save_every": 2, "eval_every": 2, "learning_rate": 0.003, "warmup_ratio": 0, **training}
    path.write_text(f"model:\n  name: {tiny}\ndata:\n  train: {demo / 'qa_train.jsonl'}\nadapter:\n  mode: lora\n"
                    "training:\n" + "".join(f"  {k}: {v}\n" for k, v in tr.items()) + f"output_dir: {out}\n")
    return path


def fake_run(path: Path, marker: str = "precious") -> Path:
    """A finished run's folder with a file whose loss the probes would notice."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "run.json").write_text(json.dumps({"schema_version": 1, "status": "completed"}))
    (path / "results.txt").write_text(marker)
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_model_dir, demo_dir) -> Path:
    """A completed 6-step run with checkpoints at steps 2, 4 and 6 (copied by each probe)."""
    root = tmp_path_factory.mktemp("finished")
    cfg = write_config(root / "train.yaml", tiny_model_dir, demo_dir, root / "runs", max_steps=6, keep_checkpoints=3)
    res = cli("train", cfg, *QUIET, "--set", "name=ck")
    assert res.returncode == 0, res.stderr
    return root / "runs" / "ck"


def copy_run(finished: Path, dest: Path) -> Path:
    run = dest / "runs" / "ck"
    shutil.copytree(finished, run)
    return run


# -- names: a run never escapes output_dir ---------------------------------------------------

@pytest.mark.parametrize("name", ["..", ".", "../x", "ABS", "a/b", ".hidden"])
def test_bad_run_name_is_refused_and_deletes_nothing(tmp_path, tiny_model_dir, demo_dir, name):
    proj = tmp_path / "proj"
    (proj / "runs").mkdir(parents=True)
    (proj / "keep.txt").write_text("project file")
    fake_run(proj / "runs" / "other")
    fake_run(proj / "x")
    fake_run(tmp_path / "victim")
    (proj / "run.json").write_text("{}")  # a run.json where `..` points: --overwrite would rmtree it
    (proj / "runs" / "run.json").write_text("{}")
    label = f"run name {name!r} --overwrite"
    if name == "ABS":
        name = str(tmp_path / "victim")  # an absolute path: Path("runs") / "/abs" is "/abs"
    cfg = write_config(proj / "train.yaml", tiny_model_dir, demo_dir, "runs", max_steps=2)
    before = digest(tmp_path)
    probe(label, ["train", cfg, *QUIET, "--overwrite", "--set", f"name={name}"], cwd=proj,
          want_error=True, intact=lambda: kept(before, tmp_path), match="name:")


def test_study_arm_named_dotdot_is_refused(tmp_path, demo_dir):
    study = tmp_path / "s.yaml"
    study.write_text(f"data:\n  train: {demo_dir / 'qa_train.jsonl'}\n  test: {demo_dir / 'qa_test.jsonl'}\n"
                     f"output_dir: {tmp_path / 'studies'}\narms:\n  - {{name: zero, regimen: prompt}}\n  - {{name: '..', regimen: prompt}}\n")
    probe("study arm named '..'", ["study", study, "--dry-run"], want_error=True, match="name")


def test_eval_result_name_cannot_escape(tmp_path, tiny_model_dir, demo_dir):
    before = digest(tmp_path)
    probe("eval name '../escaped'", ["eval", tiny_model_dir, "--data", demo_dir / "qa_test.jsonl", "--task", "qa", "--limit", "1",
                                     "--quiet", "--set", "max_new_tokens=1", "--set", "name=../../escaped", "--set", f"output_dir={tmp_path / 'runs'}"],
          want_error=True, intact=lambda: kept(before, tmp_path))
    assert not any(tmp_path.rglob("escaped*"))


# -- --overwrite checks everything first; a failed start leaves nothing behind ------------------

@pytest.mark.parametrize("bad", [("model typo", "model.name=tiny-typo-model"), ("missing data", "data.train=nope.jsonl"),
                                 ("adapter on no module", "adapter.target_modules=[no_such_proj]")])
def test_overwrite_with_a_bad_config_keeps_the_finished_run(tmp_path, finished, tiny_model_dir, demo_dir, bad):
    run = copy_run(finished, tmp_path)
    before = digest(run)
    cfg = write_config(tmp_path / "train.yaml", tiny_model_dir, demo_dir, tmp_path / "runs", max_steps=6, keep_checkpoints=3)
    probe(f"--overwrite with {bad[0]}", ["train", cfg, *QUIET, "--overwrite", "--set", "name=ck", "--set", bad[1]],
          want_error=True, intact=lambda: digest(run) == before)
    assert not list((tmp_path / "runs").glob(".ck.replaced*"))


def test_failed_start_then_corrected_retry(tmp_path, tiny_model_dir, demo_dir):
    cfg = write_config(tmp_path / "train.yaml", tiny_model_dir, demo_dir, tmp_path / "runs", max_steps=2)
    probe("fresh run with a model typo", ["train", cfg, *QUIET, "--set", "name=fresh", "--set", "model.name=tiny-typo-model"],
          want_error=True)
    probe("corrected retry after a failed start", ["train", cfg, *QUIET, "--set", "name=fresh"], want_error=False)
    assert json.loads((tmp_path / "runs" / "fresh" / "run.json").read_text())["status"] == "completed"


# -- one process per run directory ---------------------------------------------------------------

def test_second_process_on_a_live_run_is_refused(tmp_path, tiny_model_dir, demo_dir):
    cfg = write_config(tmp_path / "train.yaml", tiny_model_dir, demo_dir, tmp_path / "runs", max_steps=5000, save_every=5, eval_every=1000)
    run = tmp_path / "runs" / "live"
    first = subprocess.Popen([sys.executable, "-m", "tunesmith", "train", str(cfg), "--quiet", "--set", "name=live"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"},
                             cwd=tempfile.gettempdir())
    try:
        deadline = time.time() + 240
        while not (run / "checkpoints" / "state.json").exists():
            assert first.poll() is None and time.time() < deadline, "the first process did not start training"
            time.sleep(0.1)

        def alive_and_whole():
            return first.poll() is None and (run / "run.json").exists() and (run / "checkpoints" / "state.json").exists()

        probe("second --resume on a live run", ["train", cfg, *QUIET, "--resume", "--set", "name=live"],
              want_error=True, intact=alive_and_whole, match="another tunesmith process")
        probe("second --overwrite on a live run", ["train", cfg, *QUIET, "--overwrite", "--set", "name=live", "--set", "training.max_steps=2"],
              want_error=True, intact=alive_and_whole, match="another tunesmith process")
        steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
        assert len(steps) == len(set(steps))  # one writer: no duplicated metric lines
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # The holder died: its lock went with it, and the run can be taken over.
    probe("--overwrite after the holder died", ["train", cfg, *QUIET, "--overwrite", "--set", "name=live", "--set", "training.max_steps=2"],
          want_error=False)


# -- damaged state: resume from the newest intact checkpoint -------------------------------------

def _half(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


DAMAGE = {
    "half trainable weights": lambda ck: _half(ck / "step-0000006" / "trainable.safetensors"),
    "half optimizer state": lambda ck: _half(ck / "step-0000006" / "optim.pt"),
    "empty loop.json": lambda ck: (ck / "step-0000006" / "loop.json").write_text(""),
    "latest checkpoint deleted": lambda ck: shutil.rmtree(ck / "step-0000006"),
    "empty state.json": lambda ck: (ck / "state.json").write_text(""),
    "torn last metrics line": lambda ck: (ck.parent / "metrics.jsonl").open("a").write('{"step": 7, "lo'),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_resume_survives_damage(tmp_path, finished, tiny_model_dir, demo_dir, kind):
    run = copy_run(finished, tmp_path)
    DAMAGE[kind](run / "checkpoints")
    cfg = write_config(tmp_path / "train.yaml", tiny_model_dir, demo_dir, tmp_path / "runs", max_steps=6, keep_checkpoints=3)

    def resumed(res) -> bool:
        try:
            lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
            state = json.loads((run / "checkpoints" / "state.json").read_text())
        except ValueError:
            return False
        return ([x["step"] for x in lines if "loss" in x] == list(range(1, 7))  # each step once, no torn line
                and json.loads((run / "run.json").read_text())["status"] == "completed" and (run / "checkpoints" / state["latest"]).is_dir())

    res = probe(f"--resume with {kind}", ["train", cfg, *QUIET, "--resume", "--set", "name=ck"], want_error=False, right=resumed)
    assert "warning:" in res.stderr, res.stderr
    from tunesmith.training.checkpoint import damage

    state = json.loads((run / "checkpoints" / "state.json").read_text())
    assert damage(run / "checkpoints" / state["latest"]) is None


def test_resume_with_every_checkpoint_damaged_is_one_line(tmp_path, finished, tiny_model_dir, demo_dir):
    run = copy_run(finished, tmp_path)
    for ck in (run / "checkpoints").glob("step-*"):
        _half(ck / "trainable.safetensors")
    before = digest(run)
    cfg = write_config(tmp_path / "train.yaml", tiny_model_dir, demo_dir, tmp_path / "runs", max_steps=6, keep_checkpoints=3)
    probe("--resume with every checkpoint damaged", ["train", cfg, *QUIET, "--resume", "--set", "name=ck"],
          want_error=True, intact=lambda: digest(run) == before, match="no intact checkpoint")


# -- a full disk ---------------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=60m", "tmpfs", str(mnt)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_full_disk_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, small_disk, tiny_model_dir, demo_dir):
    # Full fine-tuning of the tiny model: ~38 MB a checkpoint, so the second one does not fit in 60 MB.
    cfg = write_config(tmp_path / "train.yaml", tiny_model_dir, demo_dir, small_disk / "runs", max_steps=6, eval_every=100)
    cfg.write_text(cfg.read_text().replace("mode: lora", "mode: full"))
    run = small_disk / "runs" / "full"

    def previous_kept():
        ck = run / "checkpoints"
        steps = list(ck.glob("step-*")) if ck.exists() else []
        whole = all((s / f).exists() and (s / f).stat().st_size > 0 for s in steps for f in ("trainable.safetensors", "optim.pt", "loop.json"))
        return bool(steps) and whole and not list(ck.glob("*.tmp"))

    probe("checkpoint on a full disk", ["train", cfg, *QUIET, "--set", "name=full"], want_error=True,
          intact=previous_kept, match="no space left on")


def test_full_disk_checkpoint_write_simulated(tmp_path, tiny_model_dir, monkeypatch):
    """Where no tmpfs can be mounted: the writer fails with ENOSPC after writing half a file."""
    import errno

    import torch

    from tunesmith.errors import TunesmithError
    from tunesmith.models.loading import load_model
    from tunesmith.training import checkpoint as ckpt

    model, _, _ = load_model(str(tiny_model_dir))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    root = tmp_path / "checkpoints"
    ckpt.save_checkpoint(root, 1, model=model, optimizer=opt, scheduler=sched, loop_state={"step": 1})
    before = digest(root)

    def full_disk(obj, path, *a, **k):
        Path(path).write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(ckpt.torch, "save", full_disk)
    with pytest.raises(TunesmithError, match=r"no space left on .*checkpoints: \d+ MB free"):
        ckpt.save_checkpoint(root, 2, model=model, optimizer=opt, scheduler=sched, loop_state={"step": 2})
    assert digest(root) == before and not list(root.glob("*.tmp"))


# -- evaluation results are never replaced by another evaluation ------------------------------

def test_eval_results_of_different_settings_are_both_kept(tmp_path, tiny_model_dir, demo_dir):
    other = tmp_path / "tiny-b"
    shutil.copytree(tiny_model_dir, other)
    data = demo_dir / "qa_test.jsonl"
    common = ["--data", data, "--task", "qa", "--quiet", "--set", "max_new_tokens=2", "--set", f"output_dir={tmp_path / 'runs'}"]
    for model, limit in ((tiny_model_dir, 6), (other, 6), (tiny_model_dir, 1)):
        assert cli("eval", model, *common, "--limit", limit).returncode == 0
    run_a, run_b = tmp_path / "runs" / tiny_model_dir.name, tmp_path / "runs" / "tiny-b"
    res = probe("eval compare after a 1-item re-evaluation", ["eval", "compare", run_a, run_b, "--dataset", "qa_test"], want_error=False,
                right=lambda r: "6 paired items" in r.stdout)
    assert "compared:" in res.stdout, res.stdout
    assert len(list((run_a / "eval").glob("qa_test.*.samples.jsonl"))) == 2  # both evaluations kept
    again = cli("eval", tiny_model_dir, *common, "--limit", 6)
    assert again.returncode == 0 and "cached" in again.stdout.lower() + again.stderr.lower(), again.stdout
    latest = json.loads((run_a / "eval" / "qa_test.json").read_text())
    assert latest["n"] == 6  # the cache hit is the latest again (what a study reads)
