"""The study's derived data (validation split, the out-of-domain policy in each regimen's form) and
the criteria it feeds: a real overfitting verdict for training arms, in-domain adherence and the
out-of-domain policy as separate criteria, and a chained arm's effect over its start."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tunesmith.study.config import load_study_config
from tunesmith.study.plan import plan
from tunesmith.study.prepare import prepare_data

DECLINE = "I can only answer questions about Tarrowind Instruments."


def _rows(path) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]


def _study(tmp_path, model, demo_dir, **extra) -> dict:
    d = {"name": "s", "output_dir": str(tmp_path / "studies"), "models": [str(model)], "baseline": "zero-shot",
         "data": {"train": str(demo_dir / "qa_train.jsonl"), "test": str(demo_dir / "qa_test.jsonl"),
                  "corpus": str(demo_dir / "corpus.jsonl"), "ood": str(demo_dir / "ood.jsonl"),
                  "preference_train": str(demo_dir / "pref_train.jsonl"), "system_prompt": "Be brief."},
         "policy": {"decline_message": DECLINE, "examples": str(demo_dir / "ood_train.jsonl")},
         "eval": {"max_new_tokens": 4, "limit": 6, "general_ability": False, "domain_adherence": False},
         "arms": [{"name": "zero-shot", "regimen": "prompt"}, {"name": "sft", "regimen": "sft"},
                  {"name": "dpo", "regimen": "dpo", "after": "sft"}]}
    d.update(extra)
    return d


def test_prepare_carves_validation_and_gives_the_policy_in_each_form(tmp_path, demo_dir):
    study = load_study_config(None, base=_study(tmp_path, "smollm2-135m-instruct", demo_dir))
    p = prepare_data(study)
    train, val = _rows(p.train), _rows(p.validation)
    n_qa, n_ood = len(_rows(demo_dir / "qa_train.jsonl")), len(_rows(demo_dir / "ood_train.jsonl"))
    assert len(val) == round(0.1 * (n_qa + n_ood)) and len(train) + len(val) == n_qa + n_ood
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in val}
    declines = [r for r in train + val if r["completion"] == DECLINE]
    assert len(declines) == n_ood  # every out-of-domain example answered with the decline
    pairs = _rows(p.preference_train) + _rows(p.preference_validation)
    ood_pairs = [r for r in pairs if r["chosen"] == DECLINE]
    assert len(ood_pairs) == n_ood and all(r["rejected"] and r["rejected"] != DECLINE for r in ood_pairs)
    assert p.summary["train"]["validation_records"] == len(val) and p.summary["train"]["policy_examples"] == n_ood
    # Unchanged content is not rewritten: cache keys and file times stay put on a re-run.
    before = os.stat(p.train).st_mtime_ns
    assert prepare_data(study).train == p.train and os.stat(p.train).st_mtime_ns == before


def test_plan_tells_prompting_arms_and_gives_training_arms_the_split(tmp_path, tiny_model_dir, demo_dir):
    study = load_study_config(None, base=_study(tmp_path, tiny_model_dir, demo_dir))
    jobs = {j.arm: j for j in plan(study)}
    assert DECLINE in jobs["zero-shot"].cfg.data.system_prompt and "Be brief." in jobs["zero-shot"].cfg.data.system_prompt
    assert jobs["sft"].cfg.data.system_prompt == "Be brief."  # trained arms learn the policy from data
    assert jobs["sft"].cfg.data.validation.endswith("train_validation.jsonl")
    assert jobs["dpo"].cfg.data.validation.endswith("preference_train_validation.jsonl")
    assert [j.key for j in plan(study)] == [j.key for j in jobs.values()]
    off = load_study_config(None, base=_study(tmp_path, tiny_model_dir, demo_dir, data={
        **_study(tmp_path, tiny_model_dir, demo_dir)["data"], "val_fraction": 0.0}))
    sft = next(j for j in plan(off) if j.arm == "sft")
    assert sft.cfg.data.validation is None and sft.cfg.data.val_fraction == 0.0


def test_overtrained_arm_is_flagged_and_a_sane_arm_is_not(tmp_path, tiny_model_dir, demo_dir):
    """A real study: 8 training questions and 8 validation questions; one arm trains the whole
    model at a high rate for 60 steps, the other a LoRA adapter gently for 8."""
    from tunesmith.study.runner import run_study
    from tunesmith.study.verdict import verdict

    small = tmp_path / "small.jsonl"
    small.write_text("".join(json.dumps(r) + "\n" for r in _rows(demo_dir / "qa_train.jsonl")[:16]))
    d = _study(tmp_path, tiny_model_dir, demo_dir, policy={})
    d["data"] = {"train": str(small), "test": str(demo_dir / "qa_test.jsonl"), "val_fraction": 0.5, "system_prompt": "Be brief."}
    d["eval"]["limit"] = 4
    d["defaults"] = {"training.batch_size": 4, "training.eval_every": 4, "training.warmup_ratio": 0, "data.packing": False}
    d["arms"] = [{"name": "zero-shot", "regimen": "prompt"},
                 {"name": "overtrained", "regimen": "sft", "set": {"adapter.mode": "full", "training.learning_rate": 1e-2, "training.max_steps": 60}},
                 {"name": "sane", "regimen": "sft", "set": {"adapter.mode": "lora", "training.learning_rate": 1e-3, "training.max_steps": 8}}]
    res = run_study(load_study_config(None, base=d), progress=False)["results"]
    arms = {a["arm"]: a for a in res["arms"]}
    assert arms["overtrained"]["overfitting"]["overfitting"] is True, arms["overtrained"]["overfitting"]
    assert arms["sane"]["overfitting"]["overfitting"] is False, arms["sane"]["overfitting"]
    assert arms["zero-shot"]["overfitting"] is None  # prompting arms train nothing
    assert res["data_preparation"]["train"]["validation_records"] == 8
    warned = [w for w in verdict(res)["warnings"] if w.startswith("Overfitting")]
    assert len(warned) == 1 and "overtrained" in warned[0] and "sane" not in warned[0]


def test_dpo_after_sft_reports_its_effect_over_its_start(tmp_path, tiny_model_dir, demo_dir):
    """The chain users run: DPO starts from the SFT arm; results carry its paired effect over that
    start, the verdict says it, and the policy is its own criterion beside in-domain adherence."""
    from tunesmith.study.runner import run_study
    from tunesmith.study.verdict import verdict

    d = _study(tmp_path, tiny_model_dir, demo_dir)
    d["eval"].update(limit=4, domain_adherence=True)
    d["defaults"] = {"training.max_steps": 2, "training.batch_size": 4, "training.eval_every": 1}
    res = run_study(load_study_config(None, base=d), progress=False)["results"]
    arms = {a["arm"]: a for a in res["arms"]}
    assert arms["dpo"]["status"] == "completed" and arms["dpo"]["starts_from"] == "sft"
    assert arms["dpo"]["config"]["init_from"].endswith("sft")
    assert set(arms["dpo"]["vs_start"]) >= {"correctness", "domain_adherence", "ood_policy"}
    assert {"domain_adherence", "ood_policy"} <= set(res["criteria"]) and res["criteria"]["ood_policy"]["policy"] == "decline"
    assert arms["zero-shot"]["results"]["ood_policy"]["n"] == 30 and arms["zero-shot"]["results"]["domain_adherence"]["n"] == 4
    assert all(a["overfitting"]["overfitting"] is not None for a in res["arms"] if a["kind"] == "training")
    chains = verdict(res)["chains"]
    assert len(chains) == 1 and chains[0].startswith("dpo starts from sft; its own effect over that start: correctness")
