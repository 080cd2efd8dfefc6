"""The quickstart: check the demo data, answer the held-out questions with the default model,
LoRA fine-tune it on the demo domain, answer again, and print exact match before and after.

It is what `make demo` runs until the comparative study lands; every step goes through the
same library calls a user would make.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from tunesmith.demo.domain import COMPANY, write_domain
from tunesmith.models.builtins import DEFAULT_MODEL

# Short on purpose: every training example carries it, and tokens are the CPU's budget.
QUICKSTART_SYSTEM = f"{COMPANY} help desk. Give only the short answer."
N_FACTS = 40  # sized so that the LoRA run takes a few minutes on 2 CPU cores
TRAIN_SETTINGS = [
    "adapter.mode=lora", "adapter.lora_r=16", "adapter.lora_alpha=32",
    "training.epochs=8", "training.learning_rate=2e-3", "training.batch_size=2", "training.warmup_ratio=0.05",
    "training.eval_every=1000", "training.save_every=20", "data.val_fraction=0.0",
]


def answer_and_score(model_spec: str, rows: list[dict], system: str, *, batch_size: int = 40) -> tuple[list[str], dict]:
    """Greedy answers to each row's prompt, scored with normalised exact match and containment."""
    from tunesmith.eval.metrics import answer_contained, exact_match
    from tunesmith.generation import GenerationSettings, generate_batch
    from tunesmith.models.loading import inference_device, load_model

    model, tok, _ = load_model(model_spec, device=inference_device())
    convs = [[{"role": "system", "content": system}, {"role": "user", "content": r["prompt"]}] for r in rows]
    preds = generate_batch(model, tok, convs, GenerationSettings(max_new_tokens=16), batch_size=batch_size, progress=True)
    refs = [[r["answer"], *r.get("aliases", [])] for r in rows]
    n = len(rows)
    scores = {
        "exact_match": sum(exact_match(p, rf) for p, rf in zip(preds, refs)) / n,
        "contains": sum(answer_contained(p, rf) for p, rf in zip(preds, refs)) / n,
        "n": n,
    }
    return preds, scores


def quickstart(out_dir: str | Path = "runs", *, model: str = DEFAULT_MODEL, epochs: float | None = None, progress: bool = True) -> dict:
    from tunesmith import api

    t0 = time.time()
    out = Path(out_dir)
    data_dir = out / "quickstart-data"
    files = write_domain(data_dir, n_facts=N_FACTS)
    print(f"== 1/4 data: a fictional company ({COMPANY}) the model cannot know, written to {data_dir}")
    report = api.check_data(files["qa_train"], model=model, eval_path=files["qa_test"])
    print(report.format())
    test = [json.loads(line) for line in Path(files["qa_test"]).read_text().splitlines()]

    print(f"\n== 2/4 before: {model} answers {len(test)} held-out questions")
    before_preds, before = answer_and_score(model, test, QUICKSTART_SYSTEM)

    print(f"\n== 3/4 LoRA fine-tuning {model} on {files['qa_train']}")
    overrides = [f"data.train={files['qa_train']}", f"model.name={model}", f"data.system_prompt={QUICKSTART_SYSTEM}",
                 "name=quickstart", f"output_dir={out}", *TRAIN_SETTINGS]
    if epochs is not None:
        overrides.append(f"training.epochs={epochs}")
    run = api.train(None, overrides, overwrite=True, progress=progress)

    print(f"\n== 4/4 after: the fine-tuned run answers the same {len(test)} questions")
    after_preds, after = answer_and_score(run["run_dir"], test, QUICKSTART_SYSTEM)

    result = {"before": before, "after": after, "train": {k: run[k] for k in ("steps", "final_loss", "tokens_per_s", "train_seconds", "trainable_params")},
              "wall_seconds": round(time.time() - t0, 1), "run_dir": run["run_dir"]}
    _print_result(test, before_preds, after_preds, result)
    (Path(run["run_dir"]) / "quickstart.json").write_text(json.dumps(result, indent=2))
    return result


def _print_result(test, before_preds, after_preds, result) -> None:
    from tunesmith.eval.metrics import exact_match
    from tunesmith.eval.stats import mcnemar

    b = [exact_match(p, [r["answer"], *r.get("aliases", [])]) for p, r in zip(before_preds, test)]
    a = [exact_match(p, [r["answer"], *r.get("aliases", [])]) for p, r in zip(after_preds, test)]
    print("\nexamples (question | reference | before | after):")
    for r, pb, pa in list(zip(test, before_preds, after_preds))[:6]:
        print(f"  {r['prompt']} | {r['answer']} | {pb[:40]!r} | {pa[:40]!r}")
    p = mcnemar([int(x) for x in b], [int(x) for x in a])["p_value"]
    print(f"\nexact match on {len(test)} held-out questions: before {result['before']['exact_match']:.1%}  ->  "
          f"after {result['after']['exact_match']:.1%}   (McNemar p = {p:.2g})")
    print(f"answer contained: before {result['before']['contains']:.1%}  ->  after {result['after']['contains']:.1%}")
    t = result["train"]
    print(f"training: {t['steps']} steps, {t['train_seconds']:.0f} s, {t['tokens_per_s']:.0f} tok/s, "
          f"{t['trainable_params']:,} trainable parameters; demo wall time {result['wall_seconds']:.0f} s")
    print(f"try it: tunesmith chat {result['run_dir']}")
