"""Evidence for the reward-signal regimens, beyond what the demo study measures: GRPO with the
exact-match reward on the demo domain, and DPO on real preference data (Anthropic HH-RLHF
helpful pairs from ../shared/data). Each experiment trains with tunesmith's library API, scores
the trained model against its starting model on held-out items with a paired test, times both,
and writes a Markdown table into docs/benchmarks.md between `<!-- regimens:start -->` and
`<!-- regimens:end -->` (rows of experiments not run this time are kept).

    python benchmarks/regimens.py                      # every experiment (~20 min on 2 CPU cores)
    python benchmarks/regimens.py --only grpo-demo
    python benchmarks/regimens.py --work /tmp/regimens --out /tmp/regimens.md

  grpo-demo  SFT (LoRA, a deliberately partial start, so that rewards vary within a group) on
             the demo QA pairs, then GRPO from it with the exact_match reward; mean reward of
             greedy answers to the 40 held-out, differently phrased test questions (and to 40 of
             the training prompts), GRPO run vs its SFT start.
  dpo-hh     DPO (LoRA, sigmoid loss) on 200 helpful-base pairs; preference accuracy (log-prob of
             the chosen answer above the rejected one's) on 200 other pairs, DPO run vs the
             untuned default model. Skipped when ../shared/data/hh_rlhf is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(ROOT / "benchmarks"))

from eval_shared import environment, only_names, previous_rows, write_section  # noqa: E402  (shared with the eval benchmark)

SHARED = ROOT.parent / "shared" / "data"
DEFAULT_OUT = ROOT / "docs" / "benchmarks.md"
START, END, TAG = "<!-- regimens:start -->", "<!-- regimens:end -->", "regimens:data"
TITLE = "## Reward-signal regimens: GRPO on the demo domain, DPO on HH-RLHF"


REUSE = {"on": False}  # --reuse: keep a completed run whose resolved config is the same


def _train(overrides: dict, work: Path) -> tuple[str, float]:
    import yaml

    from tunesmith import api, configlib
    from tunesmith.config import TrainConfig

    base = {"output_dir": str(work / "runs")}
    cfg = configlib.from_dict(TrainConfig, configlib.apply_overrides(base, TrainConfig, list(overrides.items())))
    run = Path(cfg.output_dir) / str(cfg.name)
    if REUSE["on"] and (run / "run.json").exists() and (run / "config.yaml").exists():
        meta = json.loads((run / "run.json").read_text())
        same = json.dumps(yaml.safe_load((run / "config.yaml").read_text()), sort_keys=True, default=str) == \
            json.dumps(json.loads(json.dumps(configlib.to_dict(cfg), default=str)), sort_keys=True, default=str)
        if meta.get("status") == "completed" and same:
            print(f"{run}: reused (completed, same config)")
            return str(run), float(meta.get("wall_seconds") or 0.0)
    t0 = time.time()
    info = api.train(cfg, overwrite=True)
    return info["run_dir"], time.time() - t0


# The SFT start of grpo-demo: partial on purpose. GRPO learns only from groups whose sampled
# answers differ in reward; a start that answers almost nothing right (5 epochs at batch 4: 15%
# held-out exact match, 79% of groups without spread) or almost everything gives it no signal.
GRPO_START = {"training.epochs": 4, "training.learning_rate": 2e-3, "training.batch_size": 2}
GRPO_SETTINGS = {"training.max_steps": 60, "training.learning_rate": 3e-4, "training.batch_size": 16,
                 "grpo.group_size": 8, "grpo.prompts_per_step": 4, "grpo.max_new_tokens": 16, "grpo.temperature": 0.8,
                 "grpo.rewards": {"exact_match": 1.0}}


def grpo_demo(work: Path) -> dict:
    from tunesmith.demo.domain import write_domain
    from tunesmith.demo.quickstart import N_FACTS, QUICKSTART_SYSTEM
    from tunesmith.eval.reward_eval import reward_gain

    f = write_domain(work / "demo-data", n_facts=N_FACTS)
    common = {"data.system_prompt": QUICKSTART_SYSTEM, "data.val_fraction": 0.0, "adapter.mode": "lora"}
    sft, t_sft = _train({**common, "name": "sft-start", "regimen": "sft", "data.train": str(f["qa_train"]), **GRPO_START}, work)
    grpo, t_grpo = _train({**common, "name": "grpo-exact", "regimen": "grpo", "init_from": sft, "data.train": str(f["qa_train"]),
                           **GRPO_SETTINGS}, work)
    t0 = time.time()
    g = reward_gain(grpo, sft, str(f["qa_test"]), {"exact_match": 1.0}, max_new_tokens=16, batch_size=40)
    # The same measure on 40 of the prompts GRPO trained on: what RL optimises directly.
    seen = reward_gain(grpo, sft, str(f["qa_train"]), {"exact_match": 1.0}, max_new_tokens=16, batch_size=40, limit=40)
    steps = [json.loads(x) for x in (Path(grpo) / "metrics.jsonl").read_text().splitlines() if '"reward_mean"' in x]
    first, last = steps[:10], steps[-10:]
    n_steps = GRPO_SETTINGS["training.max_steps"]
    dynamics = (f"; sampled training reward {sum(x['reward_mean'] for x in first) / len(first):.3f} (first 10 steps) -> "
                f"{sum(x['reward_mean'] for x in last) / len(last):.3f} (last 10); groups without reward spread "
                f"{sum(x['zero_std_groups'] for x in steps) / len(steps):.0%}; greedy reward on 40 training prompts "
                f"{seen['base']['mean_reward']:.3f} -> {seen['model']['mean_reward']:.3f} "
                f"({seen['gain']:+.3f} [{seen['ci']['low']:+.3f}, {seen['ci']['high']:+.3f}], p {seen['p_value']:.3g})")
    start = f"SFT LoRA, {GRPO_START['training.epochs']} epochs at batch {GRPO_START['training.batch_size']}"
    return {"experiment": "grpo-demo", "data": f"demo domain, {N_FACTS} facts: {g['model']['n']} held-out questions",
            "measure": "mean exact-match reward", "start": start, "before": _ci(g["base"]), "after": _ci(g["model"]),
            "gain": g["gain"], "gain_ci": g["ci"], "p_value": g["p_value"],
            "train_s": round(t_sft + t_grpo, 1), "train_note": f"SFT {t_sft:.0f} s + GRPO {n_steps} steps {t_grpo:.0f} s{dynamics}",
            "eval_s": round(time.time() - t0, 1)}


def _ci(m: dict) -> dict:
    return {"value": m["mean_reward"], **m["ci"], "n": m["n"]}


def dpo_hh(work: Path) -> dict | None:
    src = SHARED / "hh_rlhf"
    if not src.is_dir():
        print(f"dpo-hh: skipped ({src} is absent)")
        return None
    sys.path.insert(0, str(ROOT / "examples"))
    from prepare_shared import prep_hh_rlhf

    from tunesmith.eval.preference import preference_accuracy
    from tunesmith.eval.stats import mcnemar, paired_bootstrap
    from tunesmith.models.builtins import DEFAULT_MODEL

    counts = prep_hh_rlhf(src, work / "hh", 200, 200, 0)
    run, t_train = _train({"name": "dpo-hh", "regimen": "dpo", "data.train": str(work / "hh" / "pref_train.jsonl"),
                           "data.val_fraction": 0.0, "data.max_length": 384, "adapter.mode": "lora", "training.epochs": 1,
                           "training.learning_rate": 5e-4, "training.batch_size": 4, "dpo.beta": 0.1}, work)
    t0 = time.time()
    test = str(work / "hh" / "pref_test.jsonl")
    before = preference_accuracy(DEFAULT_MODEL, test, progress=True)
    after = preference_accuracy(run, test, progress=True)
    d = paired_bootstrap([float(x) for x in before["scores"]], [float(x) for x in after["scores"]], n_resamples=1000)
    return {"experiment": "dpo-hh", "data": f"HH-RLHF helpful-base: {counts['train']} training pairs, {after['n']} held-out pairs "
            f"({counts['dropped_defective']} defective records dropped)", "measure": "preference accuracy",
            "start": f"{DEFAULT_MODEL} (untuned)",
            "before": {k: before[k] for k in ("low", "high", "n")} | {"value": before["accuracy"]},
            "after": {k: after[k] for k in ("low", "high", "n")} | {"value": after["accuracy"]},
            "gain": d["diff"], "gain_ci": {"low": d["low"], "high": d["high"]}, "p_value": d["p_value"],
            "mcnemar_p": mcnemar(before["scores"], after["scores"])["p_value"],
            "train_s": round(t_train, 1), "train_note": f"DPO 1 epoch {t_train:.0f} s", "eval_s": round(time.time() - t0, 1)}


EXPERIMENTS = {"grpo-demo": grpo_demo, "dpo-hh": dpo_hh}


def _fmt(m: dict) -> str:
    return f"{m['value']:.3f} [{m['low']:.3f}, {m['high']:.3f}]"


def render(rows: list[dict], env: dict) -> str:
    lines = [f"- Measured: {env['date']}; machine: {env['machine']}; load average at the start: {env['load_start']}",
             f"- Versions: {', '.join(f'{k} {v}' for k, v in env['versions'].items())}; tunesmith checkout {env.get('git') or 'unknown'}",
             "", "| experiment | data | measure | starting model | before [95% CI] | after [95% CI] | gain [95% CI] | p | training | eval |",
             "|---|---|---|---|---|---|---|---:|---|---:|"]
    for r in rows:
        lines.append(f"| {r['experiment']} | {r['data']} | {r['measure']} | {r['start']} | {_fmt(r['before'])} | {_fmt(r['after'])} | "
                     f"{r['gain']:+.3f} [{r['gain_ci']['low']:+.3f}, {r['gain_ci']['high']:+.3f}] | {r['p_value']:.3g} | "
                     f"{r['train_note']} | {r['eval_s']:.0f} s |")
    lines += ["", "p: paired bootstrap over items (two-sided). Before and after are scored on the same held-out items."]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", help=f"comma-separated subset of {','.join(EXPERIMENTS)}")
    p.add_argument("--work", default="runs/benchmarks-regimens", help="where runs and prepared data go")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--reuse", action="store_true", help="keep completed runs whose resolved config is unchanged (their recorded training time is reported)")
    a = p.parse_args(argv)
    REUSE["on"] = a.reuse
    names = only_names(a.only, EXPERIMENTS, "experiment(s)")
    os.chdir(ROOT)
    from tunesmith.models.builtins import DEFAULT_MODEL

    env = environment(DEFAULT_MODEL, None)
    work = Path(a.work)
    rows = [r for r in (EXPERIMENTS[n](work) for n in names) if r]
    out = Path(a.out)
    text = out.read_text(encoding="utf-8") if out.exists() else ""
    prev = [r for r in previous_rows(text, TAG) if r["experiment"] not in {x["experiment"] for x in rows}]
    rows = sorted(rows + prev, key=lambda r: list(EXPERIMENTS).index(r["experiment"]))
    table = render(rows, env)
    print(table)
    write_section(out, table, rows, start=START, end=END, tag=TAG, title=TITLE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
