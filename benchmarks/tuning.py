"""Does tuning change which regimen wins? Evidence for `tunesmith tune` and tuned studies, written
into docs/benchmarks.md between `<!-- tuning:start -->` and `<!-- tuning:end -->`.

    python benchmarks/tuning.py                       # everything (see docs/tuning.md for the time)
    python benchmarks/tuning.py --only search         # the 12-trial LoRA SFT search only
    python benchmarks/tuning.py --quick               # end-to-end check in minutes: a tiny random
                                                      # model, 2 trials, short runs (figures meaningless)

  search        `tunesmith tune` on the demo's LoRA SFT (quickstart data and settings, 10% carved
                for validation), 12 trials, TPE + median pruning: best configuration, trials
                table, importances, history page (runs/tuning/lora-tune/tune.html).
  demo          The demo domain's prompting, retrieval and LoRA SFT arms, once as the demo sets
                them and once with every arm tuned on the same budget (8 trials per arm), each
                scored on the same held-out test questions; intervals, wall times, and whether
                tuning changed the verdict.
  sst2          The same comparison on SST-2 (examples/studies/sst2.yaml's arms: zero-shot,
                few-shot, LoRA SFT), when ../shared/data/sst2 is present (prepared by
                examples/prepare_shared.py); skipped otherwise.

Everything runs through tunesmith's library API; the study figures are the studies' own
results.json, rendered by the report's functions.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from eval_shared import previous_rows, write_section  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
DEFAULT_OUT = ROOT / "docs" / "benchmarks.md"
START, END, TAG = "<!-- tuning:start -->", "<!-- tuning:end -->", "tuning:data"
TITLE = "## Tuning: does an equal hyperparameter search change which regimen wins?"
ARMS = ("zero-shot", "few-shot", "rag", "lora-sft")
TRAIN_LIMIT = 0  # --train-limit: SST-2 training sentences (0: all 1,000 the example study trains on)
PROMPT_TEMPLATES = ["{question}", "Question: {question}\nAnswer in a few words.", "{question}\nGive only the short answer."]


def tiny_model(work: Path) -> str:
    """A 2-block random llama with the default model's tokenizer (the tests' tiny model), for --quick."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tunesmith.models.builtins import DEFAULT_MODEL
    from tunesmith.models.loading import load_tokenizer

    out = work / "tiny-model"
    if not (out / "config.json").exists():
        tok = load_tokenizer(DEFAULT_MODEL)
        torch.manual_seed(0)
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True,
                          bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        LlamaForCausalLM(cfg).save_pretrained(out)
        tok.save_pretrained(out)
    return str(out)


def run_search(work: Path, model: str, quick: bool) -> dict:
    """`tunesmith tune` on the demo LoRA SFT (the CLI, as a user runs it)."""
    import yaml

    from tunesmith.demo.domain import write_domain
    from tunesmith.demo.quickstart import N_FACTS, QUICKSTART_SYSTEM, TRAIN_SETTINGS

    files = write_domain(work / "data", n_facts=N_FACTS)
    settings = dict(s.split("=", 1) for s in TRAIN_SETTINGS)
    settings.update({"data.val_fraction": "0.1", "training.eval_every": "7"})
    if quick:
        settings.update({"training.epochs": "1", "training.max_steps": "4", "training.eval_every": "2"})
    cfg = {"name": "lora", "output_dir": str(work / "runs"), "model": {"name": model},
           "data": {"train": str(files["qa_train"]), "system_prompt": QUICKSTART_SYSTEM}}
    path = work / "lora.yaml"
    path.write_text(yaml.safe_dump(cfg))
    trials = 2 if quick else 12
    cmd = [sys.executable, "-m", "tunesmith", "tune", str(path), "--trials", str(trials), "--overwrite", "--quiet",
           *[x for k, v in settings.items() for x in ("--set", f"{k}={v}")]]
    t0 = time.time()
    subprocess.run(cmd, check=True, cwd=ROOT)
    summary = json.loads((work / "runs" / "lora-tune" / "summary.json").read_text())
    return {"experiment": "search", "trials": trials, "wall_seconds": round(time.time() - t0, 1), "summary": summary,
            "table": (work / "runs" / "lora-tune" / "trials.md").read_text()}


def demo_config(work: Path, model: str, tuned: bool, trials: int, quick: bool) -> dict:
    from tunesmith.demo.study import demo_study

    d = demo_study(work / "studies", model)
    d["name"] = "demo-tuned" if tuned else "demo-untuned"
    d["arms"] = [a for a in d["arms"] if a["name"] in ARMS]
    d["eval"].update(general_ability=False)
    if quick:
        d["eval"].update(limit=6, max_new_tokens=4, domain_adherence=False)
        for a in d["arms"]:
            if a["regimen"] == "sft":
                a["set"] = {**a["set"], "training.epochs": 1, "training.max_steps": 4, "training.eval_every": 2}
    if tuned:
        d["tune_trials"] = trials
        spaces = {"zero-shot": {"defaults": False, "params": {"prompting.template": {"choices": PROMPT_TEMPLATES}}},
                  "few-shot": {}, "rag": {"params": {"rag.method": {"choices": ["bm25", "hybrid"]}}},
                  # the demo's 144 examples need more passes than the default 1-5 (the demo trains 8)
                  "lora-sft": {"params": {"training.epochs": {"low": 4, "high": 10, "step": 1}}}}
        for a in d["arms"]:
            space = work / f"space-{a['name']}.yaml"
            space.write_text(json.dumps({**spaces[a["name"]], **({"startup_trials": 1} if quick else {})}))
            a["tune"] = {"space": str(space)}
    return d


def sst2_config(work: Path, model: str, tuned: bool, trials: int, quick: bool) -> dict | None:
    import yaml

    data = ROOT / "data-shared" / "sst2"
    if not (SHARED / "sst2").exists():
        return None
    if not (data / "train.jsonl").exists():
        subprocess.run([sys.executable, str(ROOT / "examples" / "prepare_shared.py"), "--only", "sst2"], check=True, cwd=ROOT)
    d = yaml.safe_load((ROOT / "examples" / "studies" / "sst2.yaml").read_text())
    d["name"], d["output_dir"], d["models"] = ("sst2-tuned" if tuned else "sst2-untuned"), str(work / "studies"), [model]
    for k in ("train", "classification_train", "test"):
        d["data"][k] = str(ROOT / d["data"][k])
        if TRAIN_LIMIT and k != "test":  # the first N training sentences (prepare_shared's seeded order)
            lines = Path(d["data"][k]).read_text().splitlines()[:TRAIN_LIMIT]
            d["data"][k] = str(_write_text(work / f"{k}-{TRAIN_LIMIT}.jsonl", "\n".join(lines) + "\n"))
    d["data"]["val_fraction"] = 0.1
    d["arms"] = [a for a in d["arms"] if a["name"] != "head"]  # head arms are searched too, but the verdict is about the three
    if quick:
        d["eval"]["limit"] = 20
        for a in d["arms"]:
            a.setdefault("set", {}).update({"training.max_steps": 4})
    if tuned:
        d["tune_trials"] = trials
        spaces = {"zero-shot": {"defaults": False, "params": {"prompting.template": {"choices": ["{question}", "{question}\nAnswer:"]}}},
                  # one epoch as the example study trains (13 min per LoRA run on 2 cores): the rest is searched
                  "lora-sft": {"params": {"training.epochs": {"choices": [1]}}}}
        for a in d["arms"]:
            a["tune"] = {"space": str(_write_json(work / f"space-sst2-{a['name']}.yaml", spaces.get(a["name"], {})))}
    return d


def _write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _write_json(path: Path, d: dict) -> Path:
    path.write_text(json.dumps(d))
    return path


def run_pair(name: str, make, work: Path, model: str, trials: int, quick: bool) -> dict | None:
    """The same study untuned and tuned; what each found and whether the verdict changed."""
    from tunesmith.study.config import load_study_config
    from tunesmith.study.runner import run_study
    from tunesmith.study.verdict import verdict

    out = {"experiment": name, "trials": trials, **({"train_limit": TRAIN_LIMIT} if name == "sst2" and TRAIN_LIMIT else {})}
    for tuned in (False, True):
        d = make(work, model, tuned, trials, quick)
        if d is None:
            return None
        t0 = time.time()
        res = run_study(load_study_config(None, base=d), progress=False)["results"]
        v = verdict(res)
        out["tuned" if tuned else "untuned"] = {"dir": str(work / "studies" / d["name"]), "wall_seconds": round(time.time() - t0, 1),
                                               "verdict": v["fine_tuning_vs_prompting"], "winner": (res.get("winner") or {}).get("id")}
    out["verdict_changed"] = out["tuned"]["winner"] != out["untuned"]["winner"]
    return out


def _num(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def render(rows: list[dict]) -> str:
    from tunesmith.study.report import md_table, results_table
    from tunesmith.study.tuning import tuning_table
    from tunesmith.study.verdict import fmt_duration

    lines = []
    for r in rows:
        if r["experiment"] == "search":
            s = r["summary"]
            best = s.get("best") or {}
            states = ", ".join(f"{n} {k}" for k, n in s["states"].items())
            params = ", ".join(f"`{k}` {_num(v)}" for k, v in (best.get("params") or {}).items())
            imp = s.get("importances")
            imp = ", ".join(f"`{k}` {v:.2f}" for k, v in imp.items()) if imp else "too few completed trials"
            lines += [f"### LoRA SFT search on the demo domain ({r['trials']} trials)", "",
                      f"- Wall time {fmt_duration(r['wall_seconds'])} ({states}; sampler {s.get('sampler')}, pruner {s.get('pruner')})",
                      f"- Best: trial {best.get('trial')}, {s['metric']} {_num(best.get('value'))} with {params}",
                      f"- Parameter importances (Optuna's PED-ANOVA): {imp}", "", r["table"], ""]
            continue
        size = f", training on the first {r['train_limit']} sentences" if r.get("train_limit") else ""
        lines += [f"### {r['experiment']}: untuned vs every arm tuned ({r['trials']} trials per arm{size})", ""]
        for which in ("untuned", "tuned"):
            res = json.loads((Path(r[which]["dir"]) / "results.json").read_text())
            # compute time from the study's own records (every arm's training and evaluation over all
            # invocations, plus every search's trials): a study continued after an interruption, or
            # re-run from its cache, would otherwise show only its last invocation's wall clock
            tuning_s = (res.get("tuning") or {}).get("seconds", 0.0)
            spent = f"{fmt_duration(res['wall_seconds'] + tuning_s)}" + (f", of which searches {fmt_duration(tuning_s)}" if tuning_s else "")
            lines += [f"**{which}** (time {spent}). Verdict: {r[which]['verdict']}", "",
                      md_table(results_table(res)), ""]
            t = tuning_table(res)
            lines += [md_table(t), ""] if t else []
        lines += [f"Winner untuned: {r['untuned']['winner']}; tuned: {r['tuned']['winner']}; "
                  f"tuning {'changed' if r['verdict_changed'] else 'did not change'} the arm to deploy.", ""]
    return "\n".join(lines)


def merge(previous: list[dict], new: list[dict]) -> list[dict]:
    """This run's rows, plus the rows of experiments recorded earlier and not run this time (each
    experiment has its own cost, so they are often run one at a time), in the order search, demo, sst2."""
    done = {r["experiment"] for r in new}
    kept = []
    for r in previous:
        if r["experiment"] in done:
            continue
        if r["experiment"] == "search" and "table" not in r:  # rows written before tables were kept in the data
            table = Path(r["summary"]["validation"]).parents[1] / "trials.md"
            if not table.exists():
                continue
            r["table"] = table.read_text()
        kept.append(r)
    order = ["search", "demo", "sst2"]
    return sorted(new + kept, key=lambda r: order.index(r["experiment"]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", help="comma-separated: search, demo, sst2")
    p.add_argument("--quick", action="store_true", help="tiny random model, 2 trials, short runs: checks the pipeline only")
    p.add_argument("--work", default=str(ROOT / "runs" / "bench-tuning"))
    p.add_argument("--out", default=None, help=f"Markdown file to write (default {DEFAULT_OUT}; --quick: <work>/benchmarks.md)")
    p.add_argument("--trials", type=int, default=None, help="trials per tuned arm in the studies (default 8; --quick 2); "
                   "run demo and sst2 separately to give them different budgets, the section keeps both")
    p.add_argument("--train-limit", type=int, default=0, help="sst2: train on the first N sentences only (both studies), "
                   "to fit the searches in less time (default: all 1,000)")
    p.add_argument("--render", action="store_true", help="run nothing: re-render the recorded rows from their studies' results")
    a = p.parse_args(argv)
    global TRAIN_LIMIT
    TRAIN_LIMIT = a.train_limit
    only = set((a.only or "search,demo,sst2").split(","))
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    from tunesmith.models.builtins import DEFAULT_MODEL

    if a.render:
        out = Path(a.out) if a.out else DEFAULT_OUT
        rows = merge(previous_rows(out.read_text(encoding="utf-8"), TAG), [])
        write_section(out, render(rows), copy.deepcopy(rows), start=START, end=END, tag=TAG, title=TITLE)
        print(f"wrote {out}", file=sys.stderr)
        return 0
    model = tiny_model(work) if a.quick else DEFAULT_MODEL
    trials = a.trials or (2 if a.quick else 8)
    rows = []
    if "search" in only:
        rows.append(run_search(work / "search", model, a.quick))
    for name, make in (("demo", demo_config), ("sst2", sst2_config)):
        if name in only:
            r = run_pair(name, make, work / name, model, trials, a.quick)
            print(f"{name}: skipped (../shared/data/sst2 is absent)" if r is None else f"{name}: done", file=sys.stderr)
            rows += [r] if r else []
    out = Path(a.out) if a.out else (work / "benchmarks.md" if a.quick else DEFAULT_OUT)
    rows = merge(previous_rows(out.read_text(encoding="utf-8"), TAG) if out.exists() else [], rows)
    write_section(out, render(rows), copy.deepcopy(rows), start=START, end=END, tag=TAG, title=TITLE)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
