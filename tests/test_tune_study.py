"""Tuned studies with the tiny model: every tuned arm (prompting included) gets the same trial
budget on the validation split, and the test split is never read during the searches; results
and report show the tuned parameters, trials and tuning time, the verdict says "after equal
tuning"; a re-run does no tuning work and a changed space reruns only that arm's search."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from tunesmith.errors import ConfigError
from tunesmith.study.config import load_study_config
from test_study import _study

_OPENED: list[str] = []
_RECORDING = {"on": False}


def _audit(event, args):
    if _RECORDING["on"] and event == "open" and isinstance(args[0], (str, Path)):
        _OPENED.append(str(Path(args[0]).resolve()))


sys.addaudithook(_audit)  # Python's own audit events: every file any code opens


def _tuned(tmp_path, tiny_model_dir, demo_dir, trials=2) -> dict:
    d = _study(tmp_path, tiny_model_dir, demo_dir)
    few = _write(tmp_path / "few.yaml", {"defaults": False, "params": {"prompting.shots": {"choices": [1, 2]}}})
    lr = _write(tmp_path / "lr.yaml", {"defaults": False, "pruner": "none",
                                       "params": {"training.learning_rate": {"low": 1e-3, "high": 1e-2, "log": True}}})
    d["arms"] = [{"name": "zero-shot", "regimen": "prompt"},
                 {"name": "few-shot", "regimen": "prompt", "tune": {"space": str(few)}},
                 {"name": "sft", "regimen": "sft", "tune": {"space": str(lr)}}]
    d["tune_trials"] = trials
    return d


def _write(path: Path, d: dict) -> Path:
    path.write_text(yaml.safe_dump(d))
    return path


def test_unequal_budgets_and_tuned_chains_are_refused(tmp_path, tiny_model_dir, demo_dir):
    d = _tuned(tmp_path, tiny_model_dir, demo_dir)
    d["arms"][2]["tune"]["trials"] = 5
    with pytest.raises(ConfigError, match="different trial budgets"):
        load_study_config(None, base=d)
    d = _tuned(tmp_path, tiny_model_dir, demo_dir)
    d.pop("tune_trials")
    with pytest.raises(ConfigError, match="tune.trials: required"):
        load_study_config(None, base=d)


def test_tuned_study_searches_on_validation_only_and_caches_searches(tmp_path, tiny_model_dir, demo_dir):
    from tunesmith.study.plan import plan
    from tunesmith.study.prepare import prepare_data
    from tunesmith.study.runner import run_study
    from tunesmith.study.tuning import tune_arms

    d = _tuned(tmp_path, tiny_model_dir, demo_dir)
    study = load_study_config(None, base=d)
    prep = prepare_data(study)
    jobs = plan(study, prep)
    _OPENED.clear()
    _RECORDING["on"] = True
    try:
        tuned = tune_arms(study, jobs, prep, progress=False)
    finally:
        _RECORDING["on"] = False
    test_file = str(Path(study.data.test).resolve())
    assert _OPENED and test_file not in _OPENED  # the searches never opened the test split
    assert str(Path(prep.validation).resolve()) in _OPENED  # they selected on the validation split
    assert set(tuned) == {("few-shot", str(tiny_model_dir)), ("sft", str(tiny_model_dir))}
    assert {t["trials"] for t in tuned.values()} == {2}

    out = run_study(study, progress=False)
    res = out["results"]
    arms = {a["id"]: a for a in res["arms"]}
    assert arms["zero-shot"]["tuning"] is None
    few, sft = arms["few-shot"]["tuning"], arms["sft"]["tuning"]
    assert few["params"]["prompting.shots"] in (1, 2) and arms["few-shot"]["config"]["prompting"]["shots"] == few["params"]["prompting.shots"]
    assert arms["sft"]["config"]["training"]["learning_rate"] == pytest.approx(sft["params"]["training.learning_rate"])
    assert few["seconds"] > 0 and sft["seconds"] > 0 and few["trials"] == sft["trials"] == 2
    assert res["tuning"]["tuned"] == ["few-shot", "sft"] and res["tuning"]["untuned"] == ["zero-shot"]
    md = Path(out["paths"]["markdown"]).read_text()
    assert "## Tuning" in md and "After equal tuning (2 trials per tuned arm" in md
    assert "Tuning" in (tmp_path / "studies" / "s" / "report.html").read_text()

    # a re-run does no tuning work; a changed space reruns only that arm's search
    tune_dir = tmp_path / "studies" / "s" / "tune"
    journals = {a: (tune_dir / a / "journal.log").stat().st_mtime for a in ("few-shot", "sft")}
    runs = tmp_path / "studies" / "s" / "runs"
    arm_runs = {a: (runs / a / "run.json").stat().st_mtime for a in ("zero-shot", "few-shot", "sft")}
    run_study(load_study_config(None, base=d), progress=False)
    assert {a: (tune_dir / a / "journal.log").stat().st_mtime for a in journals} == journals
    assert {a: (runs / a / "run.json").stat().st_mtime for a in arm_runs} == arm_runs
    _write(tmp_path / "few.yaml", {"defaults": False, "params": {"prompting.shots": {"choices": [2, 3]}}})
    run_study(load_study_config(None, base=d), progress=False)
    assert (tune_dir / "sft" / "journal.log").stat().st_mtime == journals["sft"]
    assert (tune_dir / "few-shot" / "journal.log").stat().st_mtime != journals["few-shot"]
    assert (runs / "sft" / "run.json").stat().st_mtime == arm_runs["sft"]
