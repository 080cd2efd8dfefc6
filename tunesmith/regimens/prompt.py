"""Prompting: adapt the model with a system prompt, a template and few-shot examples, no
training. `prepare()` chooses the examples (one seeded set, or a pool searched per question by
sentence-embedding similarity) and records the exact recipe in the run directory."""

from __future__ import annotations

import random
import time

from tunesmith.data.schemas import load_dataset
from tunesmith.data.templating import to_messages
from tunesmith.errors import TunesmithError
from tunesmith.prompting import Recipe
from tunesmith.runs import start_run, update_run

ACCEPTS = ("prompt_completion", "messages")


def example_pairs(rows: list[dict], dtype: str) -> list[dict]:
    """(user, assistant) pairs for few-shot turns: the last answer and the user turn it answers
    (a conversation's last exchange)."""
    out = []
    for r in rows:
        msgs = to_messages(r, dtype)
        last = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=None)
        user = next((msgs[i]["content"] for i in range(last - 1, -1, -1) if msgs[i]["role"] == "user"), None) if last else None
        if user is not None:
            out.append({"user": user, "assistant": msgs[last]["content"]})
    return out


def build_recipe(cfg, pairs: list[dict]) -> Recipe:
    p = cfg.prompting
    if p.shots and len(pairs) < p.shots + (1 if p.shot_selection == "similar" else 0):
        raise TunesmithError(f"{cfg.data.train}: {len(pairs)} examples, fewer than prompting.shots={p.shots}")
    if not p.shots:
        return Recipe(system=cfg.data.system_prompt, template=p.template)
    if p.shot_selection == "random":
        chosen = random.Random(cfg.seed).sample(pairs, p.shots)
        return Recipe(system=cfg.data.system_prompt, template=p.template, shots=chosen, shot_mode="fixed", k=p.shots)
    return Recipe(system=cfg.data.system_prompt, template=p.template, shots=pairs, shot_mode="similar", k=p.shots)


def prepare(cfg, *, resume: bool = False, overwrite: bool = False, progress: bool = True, regimen: str = "prompt") -> dict:
    t0 = time.time()
    pairs, counts = [], {"train": 0}
    if cfg.data.train:
        ds = load_dataset(cfg.data.train, cfg.data.type, accept=ACCEPTS)
        pairs, counts = example_pairs(ds.rows(), ds.type), {"train": len(ds)}
    recipe = build_recipe(cfg, pairs)
    run = start_run(cfg, regimen=regimen, files={"train": cfg.data.train or None}, counts=counts,
                    trains_weights=False, resume=resume, overwrite=overwrite)
    recipe.save(run)
    summary = {"status": "completed", "steps": 0, "final_loss": None, "trained_tokens": 0, "trainable_params": 0,
               "train_seconds": 0.0, "tokens_per_s": 0.0, "wall_seconds": round(time.time() - t0, 2),
               "system_prompt": cfg.data.system_prompt, "shots": cfg.prompting.shots, "shot_selection": cfg.prompting.shot_selection}
    update_run(run, **summary)
    return {"run_dir": str(run), **summary}


train = prepare  # `tunesmith train` runs every regimen the same way
