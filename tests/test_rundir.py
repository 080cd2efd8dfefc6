"""Run-directory safety without a model: names, guarded deletion, the replace-on-success
swap of --overwrite, the run lock across processes, and torn metrics lines."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tunesmith.errors import ConfigError, TunesmithError
from tunesmith.rundir import check_name, recover_replacement, remove_tree, replacing, run_lock


@pytest.mark.parametrize("name", ["..", ".", "../x", "/abs", "a/b", "a\\b", "", " x", ".hidden", "a\0b", "a\nb"])
def test_unsafe_names_are_refused(name):
    with pytest.raises(ConfigError, match="name"):
        check_name(name)


@pytest.mark.parametrize("name", ["run", "cpt+lora-sft", "sft_lora.v2", "zero-shot__smollm2__seed0", "a b"])
def test_plain_names_pass(name):
    check_name(name)


def test_remove_tree_refuses_anything_outside_its_parent(tmp_path):
    (tmp_path / "runs" / "a").mkdir(parents=True)
    (tmp_path / "keep").mkdir()
    (tmp_path / "runs" / "link").symlink_to(tmp_path / "keep")
    for bad in (tmp_path / "runs", tmp_path / "runs" / ".." / "keep", tmp_path / "runs" / "link", tmp_path):
        with pytest.raises(TunesmithError, match="refusing to delete"):
            remove_tree(bad, tmp_path / "runs")
    remove_tree(tmp_path / "runs" / "a", tmp_path / "runs")
    assert not (tmp_path / "runs" / "a").exists() and (tmp_path / "keep").exists()


def test_replacing_restores_the_old_run_when_the_new_one_fails(tmp_path):
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"status": "completed"}))
    with pytest.raises(RuntimeError):
        with replacing(run, True):
            assert not run.exists()
            run.mkdir()
            (run / "half").write_text("new, unfinished")
            raise RuntimeError("model failed to load")
    assert json.loads((run / "run.json").read_text())["status"] == "completed" and not (run / "half").exists()
    with replacing(run, True):
        run.mkdir()
        (run / "run.json").write_text(json.dumps({"status": "completed", "new": True}))
    assert json.loads((run / "run.json").read_text())["new"] and not list(run.parent.glob(".r.replaced"))


def test_a_replacement_killed_half_way_gives_the_previous_run_back(tmp_path, capsys):
    """SIGKILL between the move aside and the new run's success leaves .r.replaced: the next start
    restores it when the half-made run holds nothing to resume, and keeps it (saying so) otherwise."""
    run = tmp_path / "runs" / "r"
    backup = run.parent / ".r.replaced"
    backup.mkdir(parents=True)
    (backup / "run.json").write_text(json.dumps({"status": "completed", "old": True}))
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"status": "running"}))  # killed before its first checkpoint
    recover_replacement(run)
    assert json.loads((run / "run.json").read_text())["old"] and not backup.exists()
    assert "restored" in capsys.readouterr().err
    backup.mkdir()
    (backup / "run.json").write_text(json.dumps({"status": "completed", "old": True}))
    (run / "run.json").write_text(json.dumps({"status": "running"}))
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "state.json").write_text("{}")  # the new run has something to resume
    recover_replacement(run)
    assert backup.exists() and json.loads((run / "run.json").read_text())["status"] == "running"
    assert "is kept" in capsys.readouterr().err


def test_run_lock_refuses_a_second_process_and_frees_on_exit(tmp_path):
    run = tmp_path / "runs" / "r"
    code = ("import sys; from tunesmith.rundir import run_lock; from tunesmith.errors import TunesmithError\n"
            f"try:\n    with run_lock({str(run)!r}): print('got it')\nexcept TunesmithError as e: print(e); sys.exit(2)")
    with run_lock(run):
        other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert other.returncode == 2 and "another tunesmith process" in other.stdout
    again = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert again.returncode == 0 and "got it" in again.stdout


def test_metrics_log_drops_a_torn_last_line_on_resume(tmp_path, capsys):
    from tunesmith.runs import MetricsLog, read_metrics

    p = tmp_path / "metrics.jsonl"
    p.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')
    log = MetricsLog(p, resume_step=2)
    log.log({"step": 3, "loss": 1.2})
    assert [r["step"] for r in read_metrics(p)] == [1, 2, 3]
    assert "torn last line dropped" in capsys.readouterr().err
    p.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(TunesmithError, match="metrics.jsonl:2"):
        read_metrics(p)
