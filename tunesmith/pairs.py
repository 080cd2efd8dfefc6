"""Build preference pairs from a reward signal: sample several answers per prompt from a model,
score them with reward functions (the same registry GRPO uses), and keep the best and the worst
answer of each prompt as (chosen, rejected), for DPO.

`tunesmith data pairs PROMPTS --model M --reward exact_match --out pairs.jsonl` is the command;
`build_pairs(...)` the library call. Prompts whose answers all score the same (no preference)
or differ by no more than `min_gap` give no pair and are counted. Work is resumable: every batch
of prompts is appended to `<out>.partial` (with the settings' hash on its first line), a rerun with
the same settings continues after the last finished batch, and the output file appears, whole,
only at the end (temporary file, then rename).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

from tunesmith.atomic import write_jsonl_atomic
from tunesmith.errors import TunesmithError

def _settings_hash(**settings) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _read_partial(path: Path, key: str) -> dict[int, dict | None]:
    """Prompt index -> pair (None: no pair) from a partial file written with the same settings."""
    if not path.exists():
        return {}
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or json.loads(lines[0]).get("settings") != key:
        return {}  # other settings: start over
    done = {}
    for ln in lines[1:]:
        try:
            rec = json.loads(ln)
        except ValueError:
            break  # a line cut by a kill: everything before it is kept
        done[rec["index"]] = rec["pair"]
    return done


def choose_pair(answers: list[str], scores: list[float], min_gap: float = 0.0) -> tuple[int, int] | None:
    """(best, worst) indices of one prompt's scored answers, or None when no answer is preferred:
    the gap is not above `min_gap`, or the best and worst answers are the same text. Ties go to
    the earliest sample (deterministic)."""
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    worst = min(range(len(scores)), key=lambda i: (scores[i], i))
    if scores[best] - scores[worst] <= min_gap or answers[best].strip() == answers[worst].strip():
        return None
    return best, worst


def build_pairs(model: str, data: str | Path, out: str | Path, rewards: Mapping[str, float], *,
                reward_options: Mapping[str, Mapping[str, Any]] | None = None, n_samples: int = 4,
                max_new_tokens: int = 64, temperature: float = 1.0, top_p: float = 1.0, system: str | None = None,
                min_gap: float = 0.0, limit: int | None = None, batch_prompts: int = 8, seed: int = 0,
                data_type: str | None = None, progress: bool = True) -> dict:
    """Write preference pairs (prompt, chosen, rejected, chosen_reward, rejected_reward) to `out`.

    data: prompt_only or prompt_completion records; their columns go to the rewards as in GRPO
    (a prompt_completion record's completion is offered as `answer`). system: the system prompt
    to sample with (default: the model run's own). Returns {"path", "prompts", "pairs", "no_preference",
    "mean_gap", "resumed_prompts"}.
    """
    from tqdm.auto import tqdm

    from tunesmith.runs import run_system_prompt
    from tunesmith.data.templating import prompt_text, to_messages
    from tunesmith.eval.reward_eval import load_reward_prompts, repeat_columns
    from tunesmith.models.loading import load_model
    from tunesmith.regimens.grpo import sample_completions
    from tunesmith.rewards import combine

    if n_samples < 2:
        raise TunesmithError(f"n_samples: {n_samples} is too few; sample at least 2 answers per prompt to compare")
    # bad data and rewards fail before the model loads
    rows, columns = load_reward_prompts(data, rewards, reward_options, limit=limit, data_type=data_type)
    system = system if system is not None else run_system_prompt(str(model))
    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    key = _settings_hash(model=str(model), data=str(data), rewards=dict(rewards), options=reward_options, n=n_samples,
                         max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, system=system,
                         min_gap=min_gap, limit=limit, batch=batch_prompts, seed=seed)
    done = _read_partial(partial, key)
    resumed = len(done)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not done:
        partial.write_text(json.dumps({"settings": key}) + "\n", encoding="utf-8")

    model_, tok, _ = load_model(str(model))
    texts = [prompt_text(tok, to_messages(r, "prompt_only", system)) for r in rows]
    bar = tqdm(total=len(rows), initial=len(done), unit="prompt", desc="pairs", disable=not progress)
    with open(partial, "a", encoding="utf-8") as f:
        for b, start in enumerate(range(0, len(rows), batch_prompts)):
            idx = list(range(start, min(start + batch_prompts, len(rows))))
            if all(i in done for i in idx):
                continue
            # The sampling seed depends on (seed, batch) only, so a resumed run samples what the
            # uninterrupted one would have.
            s = sample_completions(model_, tok, [texts[i] for i in idx], group_size=n_samples, max_new_tokens=max_new_tokens,
                                   temperature=temperature, top_p=top_p, seed=seed * 1_000_003 + b)
            total, _ = combine(rewards, [rows[i]["prompt"] for i in idx for _ in range(n_samples)], s.texts,
                               repeat_columns(columns, idx, n_samples), options=reward_options)
            for k, i in enumerate(idx):
                answers, scores = s.texts[k * n_samples:(k + 1) * n_samples], total[k * n_samples:(k + 1) * n_samples]
                pick = choose_pair(answers, scores, min_gap)
                pair = None
                if pick:
                    pair = {"prompt": rows[i]["prompt"], "chosen": answers[pick[0]], "rejected": answers[pick[1]],
                            "chosen_reward": scores[pick[0]], "rejected_reward": scores[pick[1]]}
                    if system:
                        pair["system"] = system
                done[i] = pair
                f.write(json.dumps({"index": i, "pair": pair}, ensure_ascii=False) + "\n")
            f.flush()
            bar.update(len(idx))
    bar.close()
    pairs = [done[i] for i in range(len(rows)) if done.get(i)]
    write_jsonl_atomic(out, pairs)
    partial.unlink()
    gaps = [p["chosen_reward"] - p["rejected_reward"] for p in pairs]
    return {"path": str(out), "prompts": len(rows), "pairs": len(pairs), "no_preference": len(rows) - len(pairs),
            "mean_gap": sum(gaps) / len(gaps) if gaps else None, "resumed_prompts": resumed}
