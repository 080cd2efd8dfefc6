"""The bundled demo study: every main regimen on the demo domain with the default model, sized
to finish within ~20 minutes on 2 CPU cores. `tunesmith demo` (and `make demo`) runs it."""

from __future__ import annotations

from pathlib import Path

from tunesmith.demo.domain import COMPANY, write_domain
from tunesmith.demo.quickstart import N_FACTS, QUICKSTART_SYSTEM, TRAIN_SETTINGS
from tunesmith.models.builtins import DEFAULT_MODEL

# The quickstart's LoRA settings (8 epochs: with 6, held-out exact match fell to 0.53 once the
# training data also carried the 40 out-of-domain declines), and a validation loss every 7 steps
# (once per epoch: 144 examples pack into ~13 rows, 2 per step; the study carves the validation
# split; the quickstart has none, so its eval_every/val_fraction do not apply here).
SFT = {**{k: v for k, v in (s.split("=", 1) for s in TRAIN_SETTINGS) if k not in ("training.eval_every", "data.val_fraction")},
       "training.epochs": 8, "training.eval_every": 7}
DECLINE = f"I can only answer questions about {COMPANY}."
GRPO_NOTE = ("GRPO is not an arm of the demo: on the demo domain it needs about 10 minutes of 2 CPU cores on top of SFT "
             "(benchmarks/regimens.py --only grpo-demo: held-out exact match 0.375 -> 0.550, p = 0.002, in "
             "docs/benchmarks.md), which would take the demo past its 20-minute budget; examples/studies/gsm8k.yaml "
             "runs it as a study arm.")


def demo_study(out_dir: str | Path = "studies", model: str = DEFAULT_MODEL) -> dict:
    """The demo study as a config mapping (what a user would write in STUDY.yaml)."""
    data = Path(out_dir) / "demo" / "data"
    f = write_domain(data, n_facts=N_FACTS)
    return {
        "name": "demo", "output_dir": str(out_dir), "models": [model], "seeds": [0], "baseline": "zero-shot",
        "data": {"train": str(f["qa_train"]), "test": str(f["qa_test"]), "corpus": str(f["corpus"]),
                 "preference_train": str(f["pref_train"]), "preference_test": str(f["pref_test"]),
                 "classification_train": str(f["cls_train"]), "classification_test": str(f["cls_test"]),
                 "ood": str(f["ood"]), "system_prompt": QUICKSTART_SYSTEM, "val_fraction": 0.1},
        # The help desk declines what is not its business: prompting arms are told so, SFT learns
        # it from 40 general questions answered with the decline, DPO from pairs preferring it.
        "policy": {"out_of_domain": "decline", "decline_message": DECLINE, "examples": str(f["ood_train"]),
                   "statement": f'If a question is not about {COMPANY}, reply exactly: "{DECLINE}"'},
        "eval": {"max_new_tokens": 16, "batch_size": 40},
        "arms": [
            {"name": "zero-shot", "regimen": "prompt"},
            {"name": "few-shot", "regimen": "prompt", "set": {"prompting.shots": 4, "prompting.shot_selection": "similar"}},
            # Retrieval plus 3 random (seeded) examples that show the short-answer format: with the
            # passages alone the 135M model copies a passage (exact match 0.00, recall@2 1.00).
            {"name": "rag", "regimen": "rag", "set": {"rag.top_k": 2, "prompting.shots": 3}},
            {"name": "lora-sft", "regimen": "sft", "set": SFT},
            {"name": "cpt", "regimen": "cpt", "report": False,
             "set": {"adapter.mode": "lora", "training.epochs": 4, "training.learning_rate": 2e-3, "training.batch_size": 2, "data.val_fraction": 0.0}},
            {"name": "cpt+lora-sft", "regimen": "sft", "after": "cpt", "set": SFT},
            # Head only (backbone frozen) reached 0.54 on the demo labels; with LoRA 0.98 (40 steps).
            {"name": "head", "regimen": "head", "set": {"head.train": "lora", "training.epochs": 2, "training.learning_rate": 1e-3,
                                                        "training.batch_size": 16, "training.eval_every": 9}},
            # DPO as users run it: on top of the SFT arm (its reference model is that start). At
            # 5e-4 for 2 epochs it learned to append the decline to every answer (exact match 0.82 ->
            # 0.00, validation loss rising after step 36); 1 epoch at 1e-4 keeps the start's answers.
            {"name": "dpo", "regimen": "dpo", "after": "lora-sft",
             "set": {"adapter.mode": "lora", "training.epochs": 1, "training.learning_rate": 1e-4, "training.batch_size": 4,
                     "training.eval_every": 9, "dpo.beta": 0.1}},
        ],
        "notes": [GRPO_NOTE],
    }


def run_demo(out_dir: str | Path = "studies", *, dry_run: bool = False) -> dict:
    from tunesmith.study.config import load_study_config
    from tunesmith.study.runner import run_study

    print(f"tunesmith demo: which way of adapting {DEFAULT_MODEL} to the domain of {COMPANY} wins?")
    return run_study(load_study_config(None, base=demo_study(out_dir)), dry_run=dry_run)
