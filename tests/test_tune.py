"""`tunesmith tune` with the tiny model: a search killed with SIGKILL continues with --resume
and repeats no finished trial; a trial with a bad learning rate is pruned and its run directory
says so; a prompting search chooses shots and system prompts on the validation split; bad
SPACE.yaml files are one-line errors that write nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tunesmith import configlib
from tunesmith.config import load_train_config
from tunesmith.errors import ConfigError
from tunesmith.tune.space import SearchSpace, load_space


def _sft(tmp_path, tiny_model_dir, demo_dir, **training) -> dict:
    t = {"max_steps": 6, "batch_size": 8, "eval_every": 2, "save_every": 2, "learning_rate": 3e-3, **training}
    return {"name": "lora", "output_dir": str(tmp_path / "runs"), "model": {"name": str(tiny_model_dir)},
            "data": {"train": str(demo_dir / "qa_train.jsonl"), "val_fraction": 0.1}, "training": t}


def _write(path: Path, d: dict) -> Path:
    path.write_text(yaml.safe_dump(d))
    return path


def _journal(root: Path):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(root / "journal.log")))
    return optuna.load_study(study_name="tune", storage=storage)


def _status(run: Path) -> str | None:
    try:
        return json.loads((run / "run.json").read_text()).get("status")
    except (OSError, ValueError):
        return None


def test_search_killed_with_sigkill_resumes_without_repeating_a_trial(tmp_path, tiny_model_dir, demo_dir):
    cfg = _write(tmp_path / "lora.yaml", _sft(tmp_path, tiny_model_dir, demo_dir, max_steps=24, batch_size=2, eval_every=4, save_every=4))
    space = _write(tmp_path / "space.yaml", {"defaults": False, "pruner": "none",
                                             "params": {"training.learning_rate": {"low": 1e-4, "high": 1e-2, "log": True},
                                                        "training.warmup_ratio": {"low": 0.0, "high": 0.1}}})
    root, n = tmp_path / "runs" / "lora-tune", 5
    cmd = [sys.executable, "-m", "tunesmith", "tune", str(cfg), "--trials", str(n), "--space", str(space), "--quiet"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 600
    trials = root / "trials"

    def mid_trial() -> bool:  # two trials done and a third one past its first checkpoint
        runs = sorted(trials.glob("lora-t*")) if trials.exists() else []
        done = [r for r in runs if _status(r) == "completed"]
        return len(done) >= 2 and any((r / "checkpoints" / "state.json").exists() and _status(r) == "running" for r in runs)

    while time.time() < deadline and not mid_trial():
        assert p.poll() is None, p.stdout.read()
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    before = {r.name: (r / "run.json").stat().st_mtime for r in trials.glob("lora-t*") if _status(r) == "completed"}
    killed = [r.name for r in trials.glob("lora-t*") if _status(r) == "running"]
    assert len(before) >= 2 and len(killed) == 1

    out = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    study = _journal(root)
    fin = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(fin) == n and len({t.number for t in fin}) == n
    interrupted = [t for t in study.trials if t.user_attrs.get("interrupted")]
    assert len(interrupted) == 1 and interrupted[0].user_attrs["run"] == killed[0]
    # every finished trial has its own run directory, made once; the killed one was continued, not redone
    assert sorted(t.user_attrs["run"] for t in fin) == sorted(r.name for r in trials.glob("lora-t*")) and len(list(trials.glob("lora-t*"))) == n
    assert {k: (trials / k / "run.json").stat().st_mtime for k in before} == before
    redo = next(t for t in fin if t.user_attrs.get("redo_of") == interrupted[0].number)
    assert redo.params == interrupted[0].params
    steps = [json.loads(x)["step"] for x in (trials / killed[0] / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert steps == list(range(1, 25))  # resumed from its checkpoint: each step once
    # the outputs
    summary = json.loads((root / "summary.json").read_text())
    assert summary["finished"] == n and summary["best"]["params"].keys() == {"training.learning_rate", "training.warmup_ratio"}
    best = load_train_config(root / "best.yaml")
    assert best.training.learning_rate == pytest.approx(summary["best"]["params"]["training.learning_rate"])
    assert best.data.train == str(demo_dir / "qa_train.jsonl") and best.data.validation is None  # the user's data, ready to train
    assert len((root / "trials.csv").read_text().splitlines()) == n + 2  # header, n finished, the interrupted one
    html = (root / "tune.html").read_text()
    assert "<svg" in html and "<script" not in html and "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    # resuming a finished search does no work
    again = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and len(_journal(root).trials) == len(study.trials)


def test_a_trial_with_a_bad_learning_rate_is_pruned(tmp_path, tiny_model_dir, demo_dir):
    from tunesmith.tune.outputs import write_outputs
    from tunesmith.tune.search import open_study, prepare_search, run_search

    cfg = load_train_config(None, base=_sft(tmp_path, tiny_model_dir, demo_dir, max_steps=10, eval_every=1, learning_rate=1e-2))
    space = configlib.from_dict(SearchSpace, {"defaults": False, "startup_trials": 2, "warmup_tenths": 2,
                                              "params": {"training.learning_rate": {"low": 1e-8, "high": 1e-1, "log": True}}})
    s = prepare_search(cfg, space, trials=3, metric=None, root=tmp_path / "runs" / "lora-tune", resume=False, overwrite=False)
    study = open_study(s)
    for lr in (1e-2, 2e-2, 1e-8):  # two good rates, then one far too small to learn anything
        study.enqueue_trial({"training.learning_rate": lr})
    study = run_search(s, progress=False)
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "COMPLETE", "PRUNED"]
    bad = study.trials[2]
    run = s.trials_dir / bad.user_attrs["run"]
    meta = json.loads((run / "run.json").read_text())
    assert meta["status"] == "pruned" and meta["pruned_at_step"] < 10 and not (run / "model").exists()
    assert (run / "config.yaml").exists() and (run / "metrics.jsonl").exists()  # an ordinary, readable run directory
    summary = write_outputs(s, study)
    assert summary["states"] == {"complete": 2, "pruned": 1} and summary["best"]["trial"] in (0, 1)


def test_prompting_search_chooses_shots_and_system_prompt_on_validation(tmp_path, tiny_model_dir, demo_dir):
    from tunesmith import api

    base = {"name": "fs", "regimen": "prompt", "output_dir": str(tmp_path / "runs"), "model": {"name": str(tiny_model_dir)},
            "data": {"train": str(demo_dir / "qa_train.jsonl"), "val_fraction": 0.1}}
    prompts = ["Be brief.", "Answer with the product name only."]
    space = _write(tmp_path / "space.yaml", {"defaults": False, "eval": {"max_new_tokens": 4, "limit": 6},
                                             "params": {"prompting.shots": {"choices": [0, 2]}, "data.system_prompt": {"choices": prompts}}})
    out = api.tune(load_train_config(None, base=base), trials=3, space=space, progress=False)
    root = tmp_path / "runs" / "fs-tune"
    assert out["metric"] == "val_score" and out["direction"] == "maximize" and out["finished"] == 3
    val = [json.loads(x) for x in (root / "data" / "validation.jsonl").read_text().splitlines()]
    pool = [json.loads(x) for x in (root / "data" / "train.jsonl").read_text().splitlines()]
    assert val and not {json.dumps(v, sort_keys=True) for v in val} & {json.dumps(p, sort_keys=True) for p in pool}
    for t in _journal(root).trials:
        run = root / "trials" / t.user_attrs["run"]
        recipe = json.loads((run / "recipe.json").read_text())
        assert recipe["system"] == t.params["data.system_prompt"] and len(recipe.get("shots") or []) == t.params["prompting.shots"]
        ev = json.loads((run / "eval" / "validation.json").read_text())
        assert ev["n"] == 6 and t.value == pytest.approx(ev["metrics"][ev["primary_metric"]]["value"])
    best = load_train_config(root / "best.yaml")
    assert best.data.system_prompt in prompts and best.prompting.shots in (0, 2)


@pytest.mark.parametrize("space,message", [
    ({"params": {"training.learnig_rate": {"low": 1e-5, "high": 1e-3}}}, "did you mean 'training.learning_rate'"),
    ({"params": {"adapter.lora_dropout": {"low": 0.0, "high": 2.0}}}, "leaves the option's bounds"),
    ({"params": {"training.learning_rate": {"low": 1e-3, "high": 1e-5}}}, "is above high"),
    ({"params": {"training.learning_rate": {"low": 0.0, "high": 1e-3, "log": True}}}, "log: true needs low > 0"),
    ({"params": {"training.scheduler": {"low": 0, "high": 1}}}, "give choices"),
    ({"params": {"training.scheduler": {"choices": ["cosine", "cosin"]}}}, "'cosin'"),
    ({"params": {"adapter.lora_r": {"choices": [8, "big"]}}}, "'big'"),
    ({"params": {"training.epochs": {"low": 1}}}, "give low and high"),
    ({"params": {"data.train": {"choices": ["a.jsonl"]}}}, "not searchable"),
    ({"prunner": "median"}, "did you mean 'pruner'"),
    ({"params": {"training.learning_rate": {"low": 1e-5, "high": 1e-3, "lg": True}}}, "learning_rate.log'"),
])
def test_bad_space_files_are_one_line_errors(tmp_path, space, message):
    f = _write(tmp_path / "space.yaml", space)
    with pytest.raises(ConfigError, match=message):
        load_space(f)


def test_bad_space_on_the_command_line_writes_nothing(tmp_path, tiny_model_dir, demo_dir):
    cfg = _write(tmp_path / "lora.yaml", _sft(tmp_path, tiny_model_dir, demo_dir))
    space = _write(tmp_path / "space.yaml", {"params": {"adapter.lora_r": {"low": 0, "high": 8}}})
    out = subprocess.run([sys.executable, "-m", "tunesmith", "tune", str(cfg), "--trials", "2", "--space", str(space)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    err = out.stderr.strip().splitlines()
    assert len(err) == 1 and "space.yaml" in err[0] and "adapter.lora_r" in err[0]
    assert not (tmp_path / "runs").exists()
    out = subprocess.run([sys.executable, "-m", "tunesmith", "tune", str(cfg), "--trials", "2", "--metric", "accuracy"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "val_loss" in out.stderr and not (tmp_path / "runs").exists()


def test_every_default_space_is_valid_and_every_space_number_is_bounded(tiny_model_dir, demo_dir):
    from tunesmith.config import REGIMENS
    from tunesmith.tune.space import resolve_space

    for regimen in REGIMENS:
        for mode in ("lora", "full", "freeze"):
            cfg = load_train_config(None, base={"regimen": regimen, "data": {"train": "x.jsonl"}, "adapter": {"mode": mode},
                                                "rag": {"corpus": "c.jsonl"}})
            assert resolve_space(cfg, SearchSpace())
    for cls, prefix in ((SearchSpace, ""),):
        for path in configlib.field_paths(cls):
            tp = configlib._resolve(cls, path)
            meta_cls = cls
            for part in path.split(".")[:-1]:
                meta_cls = configlib._section(configlib._hints(meta_cls)[part])
            import dataclasses

            f = next(x for x in dataclasses.fields(meta_cls) if x.name == path.split(".")[-1])
            if "int" in str(tp) or "float" in str(tp):
                assert f.metadata.get("maximum") is not None, path


def test_the_first_trial_is_the_untuned_configuration_where_it_lies_in_the_space(tmp_path, tiny_model_dir, demo_dir):
    from tunesmith.tune.search import config_point, prepare_search, run_search
    from tunesmith.tune.space import resolve_space

    cfg = load_train_config(None, base=_sft(tmp_path, tiny_model_dir, demo_dir, max_steps=2, learning_rate=2e-3, epochs=3)
                            | {"adapter": {"mode": "lora", "lora_r": 16, "lora_alpha": 24.0}})
    space = configlib.from_dict(SearchSpace, {"params": {"training.epochs": {"low": 2, "high": 6, "step": 2}}})
    point = config_point(cfg, resolve_space(cfg, space))
    # lr and rank lie in the default space; alpha 24 is not one of its choices and epochs 3 is off
    # the grid 2, 4, 6: those two are left to the sampler
    assert point["training.learning_rate"] == 2e-3 and point["adapter.lora_r"] == 16
    assert "adapter.lora_alpha" not in point and "training.epochs" not in point
    s = prepare_search(cfg, space, trials=2, metric=None, root=tmp_path / "runs" / "lora-tune", resume=False, overwrite=False)
    study = run_search(s, progress=False)
    first = study.trials[0]
    assert first.user_attrs.get("from_config") and {k: first.params[k] for k in point} == point
    assert not study.trials[1].user_attrs.get("from_config")
    off = configlib.from_dict(SearchSpace, {"start_from_config": False, "params": {"training.epochs": {"low": 2, "high": 6, "step": 2}}})
    s = prepare_search(cfg, off, trials=1, metric=None, root=tmp_path / "runs" / "off-tune", resume=False, overwrite=False)
    assert not run_search(s, progress=False).trials[0].user_attrs.get("from_config")
