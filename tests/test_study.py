"""The comparative study engine with the tiny model: planning, validation before training,
caching, continuing after SIGKILL, rerunning only changed arms, and results.json."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from tunesmith.errors import ConfigError, TunesmithError
from tunesmith.study.config import load_study_config
from tunesmith.study.plan import plan


def _study(tmp_path, tiny_model_dir, demo_dir, **extra) -> dict:
    d = {"name": "s", "output_dir": str(tmp_path / "studies"), "models": [str(tiny_model_dir)], "baseline": "zero-shot",
         "data": {"train": str(demo_dir / "qa_train.jsonl"), "test": str(demo_dir / "qa_test.jsonl"),
                  "corpus": str(demo_dir / "corpus.jsonl"), "system_prompt": "Be brief."},
         "eval": {"max_new_tokens": 4, "limit": 6, "general_ability": False, "domain_adherence": False},
         "defaults": {"training.max_steps": 4, "training.batch_size": 4, "training.learning_rate": 3e-3,
                      "training.eval_every": 2, "training.save_every": 2},
         "arms": [{"name": "zero-shot", "regimen": "prompt"},
                  {"name": "few-shot", "regimen": "prompt", "set": {"prompting.shots": 2}},
                  {"name": "rag", "regimen": "rag", "set": {"rag.method": "bm25"}},
                  {"name": "sft", "regimen": "sft"},
                  {"name": "cpt", "regimen": "cpt", "report": False},
                  {"name": "cpt+sft", "regimen": "sft", "after": "cpt"}]}
    d.update(extra)
    return d


def test_plan_chains_and_keys(tmp_path, tiny_model_dir, demo_dir):
    s = load_study_config(None, base=_study(tmp_path, tiny_model_dir, demo_dir, seeds=[0, 1]))
    jobs = plan(s)
    assert len(jobs) == 12 and jobs[0].id.endswith("/seed0")
    chained = [j for j in jobs if j.arm == "cpt+sft"]
    assert all(j.cfg.init_from.endswith("cpt__" + j.id.split("/", 1)[1].replace("/", "__")) for j in chained)
    # a changed arm changes its key and the keys of arms built on it, and nothing else
    s2 = load_study_config(None, base=_study(tmp_path, tiny_model_dir, demo_dir, seeds=[0, 1]), overrides=[])
    s2.arms[4].set["training.learning_rate"] = 1e-3
    k1, k2 = {j.id: j.key for j in jobs}, {j.id: j.key for j in plan(s2)}
    changed = {i.split("/")[0] for i in k1 if k1[i] != k2[i]}
    assert changed == {"cpt", "cpt+sft"}


def test_invalid_arm_or_data_fails_before_training(tmp_path, tiny_model_dir, demo_dir):
    from tunesmith.study.runner import run_study

    bad = _study(tmp_path, tiny_model_dir, demo_dir)
    bad["arms"][3]["set"] = {"training.learnig_rate": 1e-3}
    with pytest.raises(ConfigError, match="did you mean 'training.learning_rate'"):
        plan(load_study_config(None, base=bad))
    bad = _study(tmp_path, tiny_model_dir, demo_dir)
    bad["arms"][5]["after"] = "nope"
    with pytest.raises(ConfigError, match="no arm named 'nope'"):
        load_study_config(None, base=bad)
    bad = _study(tmp_path, tiny_model_dir, demo_dir)
    bad["data"]["corpus"] = str(demo_dir / "qa_train.jsonl")  # not raw text: cpt must refuse it
    with pytest.raises(TunesmithError):
        run_study(load_study_config(None, base=bad))
    assert not (tmp_path / "studies" / "s" / "runs").exists()


def test_dry_run_prints_the_plan(tmp_path, tiny_model_dir, demo_dir):
    from tunesmith.study.runner import run_study

    out = run_study(load_study_config(None, base=_study(tmp_path, tiny_model_dir, demo_dir)), dry_run=True)
    assert [r["job"] for r in out["plan"]] == ["zero-shot", "few-shot", "rag", "sft", "cpt", "cpt+sft"]
    assert out["plan"][3]["trained_tokens"] > 0 and out["plan"][0]["trained_tokens"] == 0
    assert "est. min" in out["text"] and not (tmp_path / "studies" / "s" / "runs").exists()


def _run_cli(cfg_path, *extra):
    return subprocess.Popen([sys.executable, "-m", "tunesmith", "study", str(cfg_path), "--quiet", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_study_runs_caches_resumes_and_reruns_only_changed_arms(tmp_path, tiny_model_dir, demo_dir):
    d = _study(tmp_path, tiny_model_dir, demo_dir)
    d["defaults"]["training.max_steps"] = 60  # long enough to be killed mid-training
    d["defaults"]["training.batch_size"] = 2
    cfg = tmp_path / "study.yaml"
    cfg.write_text(yaml.safe_dump(d))
    runs = tmp_path / "studies" / "s" / "runs"

    # 1. kill the study with SIGKILL while the sft arm is training (after a checkpoint)
    p = _run_cli(cfg)
    deadline = time.time() + 600
    state = runs / "sft" / "checkpoints" / "state.json"
    while time.time() < deadline and not (state.exists() and json.loads(state.read_text()).get("latest", "") >= "step-0000010"):
        assert p.poll() is None, p.stdout.read()
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert json.loads((runs / "sft" / "run.json").read_text())["status"] == "running"
    done_before = {n: (runs / n / "run.json").stat().st_mtime for n in ("zero-shot", "few-shot", "rag")}

    # 2. continue: finished arms are reused, sft resumes from its checkpoint, the rest run
    p = _run_cli(cfg)
    out, _ = p.communicate(timeout=900)
    assert p.returncode == 0, out
    assert {n: (runs / n / "run.json").stat().st_mtime for n in done_before} == done_before
    lines = [json.loads(x) for x in (runs / "sft" / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert [x["step"] for x in lines] == list(range(1, 61))  # each step once: resumed, not restarted
    results = json.loads((tmp_path / "studies" / "s" / "results.json").read_text())
    assert [a["id"] for a in results["arms"]] == ["zero-shot", "few-shot", "rag", "sft", "cpt+sft"]
    assert all(a["status"] == "completed" and a["results"]["correctness"]["n"] == 6 for a in results["arms"])
    sft = next(a for a in results["arms"] if a["id"] == "sft")
    assert sft["cost"]["trained_tokens"] > 0 and sft["curves"]["train"] and "correctness" in sft["vs_baseline"]
    assert (tmp_path / "studies" / "s" / "report.html").exists() and (tmp_path / "studies" / "s" / "report.md").exists()
    # the study names the arm to deploy and the report prints the commands that export or serve it
    w = results["winner"]
    assert w["id"] in {a["id"] for a in results["arms"]} and Path(w["run_dir"]).is_dir()
    assert w["export"] in (tmp_path / "studies" / "s" / "report.md").read_text()
    # the study's time covers the arms finished before the kill, not only this invocation
    timing = json.loads((tmp_path / "studies" / "s" / "timing.json").read_text())
    assert set(timing) == {"zero-shot", "few-shot", "rag", "sft", "cpt", "cpt+sft"}
    assert results["wall_seconds"] == pytest.approx(sum(t["seconds"] for t in timing.values()), abs=0.2)
    first = sum(timing[n]["seconds"] for n in ("zero-shot", "few-shot", "rag"))  # spent before the kill, cached after it
    assert first > 0.5 and results["wall_seconds"] >= first + timing["sft"]["seconds"]

    # 3. re-running a finished study does no work; changing one arm reruns only it
    mtimes = {n: (runs / n / "run.json").stat().st_mtime for n in ("zero-shot", "few-shot", "rag", "sft", "cpt", "cpt+sft")}
    d["arms"][1]["set"]["prompting.shots"] = 3
    cfg.write_text(yaml.safe_dump(d))
    p = _run_cli(cfg)
    out, _ = p.communicate(timeout=900)
    assert p.returncode == 0, out
    after = {n: (runs / n / "run.json").stat().st_mtime for n in mtimes}
    assert [n for n in mtimes if after[n] != mtimes[n]] == ["few-shot"]


def test_study_with_head_dpo_classification_and_preferences(tmp_path, tiny_model_dir, demo_dir):
    """Every criterion's source in one small study: classification (baseline by label likelihood,
    the head with its head), preference accuracy, domain adherence and general ability."""
    from tunesmith.study.runner import run_study

    d = _study(tmp_path, tiny_model_dir, demo_dir)
    d["data"].update(classification_train=str(demo_dir / "cls_train.jsonl"), classification_test=str(demo_dir / "cls_test.jsonl"),
                     preference_train=str(demo_dir / "pref_train.jsonl"), preference_test=str(demo_dir / "pref_test.jsonl"),
                     ood=str(demo_dir / "ood.jsonl"))
    d["eval"].update(domain_adherence=True, general_ability=True)
    d["defaults"].update({"training.max_steps": 2, "data.val_fraction": 0.0})
    d["arms"] = [{"name": "zero-shot", "regimen": "prompt"}, {"name": "head", "regimen": "head"}, {"name": "dpo", "regimen": "dpo"}]
    out = run_study(load_study_config(None, base=d), progress=False)
    arms = {a["id"]: a for a in out["results"]["arms"]}
    assert all(a["status"] == "completed" for a in arms.values()), {k: a["error"] for k, a in arms.items()}
    assert arms["head"]["results"]["classification"]["n"] == 6 and "correctness" not in arms["head"]["results"]
    assert arms["zero-shot"]["results"]["classification"]["n"] == 6
    assert set(arms["dpo"]["results"]) >= {"correctness", "domain_adherence", "retention"}
    assert 0 <= arms["dpo"]["extra"]["preference_accuracy"]["value"] <= 1
    assert set(arms["dpo"]["extra"]["answer"]) == {"f1", "contains"}  # the content of free answers, beside exact match
    assert "classification" in arms["head"]["vs_baseline"]
    html = (tmp_path / "studies" / "s" / "report.html").read_text()
    assert "head" in html and "dpo" in html


def test_classification_study_scores_every_arm_on_the_test_labels(tmp_path, tiny_model_dir, demo_dir):
    """A study whose held-out set is a classification task (the SST-2 shape): prompting arms and
    SFT are scored by label likelihood, the head by its head, all on the same items, paired."""
    from tunesmith.study.runner import run_study

    rows = [json.loads(x) for x in (demo_dir / "cls_train.jsonl").read_text().splitlines()]
    sft_data = tmp_path / "cls_sft.jsonl"
    sft_data.write_text("".join(json.dumps({"prompt": r["text"], "completion": r["label"]}) + "\n" for r in rows))
    d = _study(tmp_path, tiny_model_dir, demo_dir)
    d["data"] = {"train": str(sft_data), "test": str(demo_dir / "cls_test.jsonl"),
                 "classification_train": str(demo_dir / "cls_train.jsonl")}
    d["eval"].update(task="classification")
    d["defaults"].update({"training.max_steps": 2, "data.val_fraction": 0.0})
    d["arms"] = [{"name": "zero-shot", "regimen": "prompt"}, {"name": "few-shot", "regimen": "prompt", "set": {"prompting.shots": 2}},
                 {"name": "sft", "regimen": "sft"}, {"name": "head", "regimen": "head"}]
    out = run_study(load_study_config(None, base=d), progress=False)
    res = out["results"]
    arms = {a["id"]: a for a in res["arms"]}
    assert all(a["status"] == "completed" for a in arms.values()), {k: a["error"] for k, a in arms.items()}
    assert res["criteria"]["correctness"]["metric"] == "accuracy"
    for name, a in arms.items():
        c = a["results"]["correctness"]
        samples = [json.loads(x) for x in (tmp_path / "studies" / "s" / "runs" / name / "eval" / "cls_test.samples.jsonl").read_text().splitlines()]
        assert c["n"] == len(samples) == 6
        # the reported accuracy is the share of items whose predicted label equals the gold label
        assert c["value"] == pytest.approx(sum(s["prediction"] == s["reference"] for s in samples) / 6)
        # predicted and gold label counts, for the one-label warning; macro-F1 beside accuracy
        assert a["label_counts"]["predicted"] == dict(Counter(s["prediction"] for s in samples))
        assert a["label_counts"]["reference"] == dict(Counter(s["reference"] for s in samples))
        assert 0.0 <= a["extra"]["macro_f1"]["value"] <= 1.0
    assert arms["head"]["vs_baseline"]["correctness"]["n"] == 6  # the head paired item by item with zero-shot
    # accuracy is 0/1 per item: every pair carries McNemar's exact p (the criterion's test) and the
    # sign-flip permutation p; on 0/1 scores the exact sign-flip test is McNemar's test
    pair = arms["head"]["vs_baseline"]["correctness"]
    assert pair["mcnemar_p"] == pytest.approx(pair["permutation_p"])
    assert {"head", "sft", "zero-shot"} <= set(res["examples"][0]["answers"])
    assert "classification" not in arms["head"]["results"]  # one classification set: reported once, as correctness
    # benchmarks/studies.py records a finished study in a Markdown file, between its markers
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_studies", Path(__file__).resolve().parents[1] / "benchmarks" / "studies.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    doc = tmp_path / "bench.md"
    doc.write_text("# Benchmarks\n")
    for _ in range(2):  # a second recording replaces the first
        assert mod.main([str(tmp_path / "studies" / "s"), "--out", str(doc)]) == 0
    text = doc.read_text()
    assert text.count("<!-- study:s:start -->") == 1 and "**Verdict.**" in text
    assert all(f"| {name} |" in text for name in arms)


def test_a_new_option_at_its_default_keeps_finished_arms_cached(tmp_path, tiny_model_dir, demo_dir, monkeypatch):
    """The cache key hashes the fields that differ from the defaults: adding an option to
    tunesmith (at its default) must not rerun every finished study; setting it must."""
    import tunesmith.study.plan as P

    s = load_study_config(None, base=_study(tmp_path, tiny_model_dir, demo_dir))
    before = {j.id: j.key for j in plan(s)}
    real = P.configlib.to_dict
    knob = {"value": 3}

    def with_new_option(obj):  # as if TrainConfig had grown grpo.new_knob (default 3)
        d = real(obj)
        if "grpo" in d:
            is_default = obj.name is None  # the default TrainConfig() plan() compares against
            d["grpo"]["new_knob"] = 3 if is_default else knob["value"]
        return d

    monkeypatch.setattr(P.configlib, "to_dict", with_new_option)
    assert {j.id: j.key for j in plan(s)} == before
    knob["value"] = 4
    assert all(k != before[i] for i, k in ((j.id, j.key) for j in plan(s)))
    assert P._non_default({"a": 1, "b": {"c": 2, "d": 3}, "e": 5}, {"a": 1, "b": {"c": 2, "d": 4}}) == {"b": {"d": 3}, "e": 5}
