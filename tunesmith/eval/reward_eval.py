"""Score a model with reward functions: the mean reward of its greedy completions, with a CI.

This is how an RL regimen is judged on its own terms: "GRPO with the exact-match reward
raises the mean reward over its starting model" means `mean_reward(run)` is above
`mean_reward(start model)` on held-out prompts (ideally with non-overlapping CIs, or a
paired bootstrap over the same items: `tunesmith.eval.stats.paired_bootstrap` on the two
`per_item` lists).

It also holds the pieces the `grpo` regimen shares with it, so that training and evaluation
hand rewards exactly the same inputs:

- `reward_columns(rows, dtype)`: the dataset's columns, one list per column, that rewards
  receive as keyword arguments. Every field of a record is a column except `prompt` (passed
  positionally as `prompts`) and the reserved names `prompts` / `completions`. For a
  prompt_completion dataset the `completion` is also offered as the `answer` column (unless
  the records have their own `answer`), so exact_match / numeric_match work on SFT data.
- `check_rewards(...)`: every reward name resolves and every column a built-in reward
  needs is present in every record, checked before any model loads.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from tunesmith.errors import TunesmithError

ACCEPTS = ("prompt_only", "prompt_completion")
RESERVED = ("prompt", "prompts", "completions")
# Columns the built-in rewards cannot do without (see tunesmith.rewards).
REQUIRED_COLUMNS = {"exact_match": ("answer",), "numeric_match": ("answer",), "code_tests": ("tests",)}


def reward_columns(rows: list[dict], dtype: str) -> dict[str, list]:
    """Columns for `rewards.combine`: {name: [value per row]} over the union of the rows' fields
    (None where a row lacks one); prompt_completion rows offer `completion` as `answer` too."""
    names: list[str] = []
    for r in rows:
        for k in r:
            if k not in RESERVED and k not in names:
                names.append(k)
    cols = {k: [r.get(k) for r in rows] for k in names}
    if dtype == "prompt_completion" and ("answer" not in cols or all(v is None for v in cols["answer"])):
        cols["answer"] = [r.get("completion") for r in rows]
    return cols


def repeat_columns(columns: Mapping[str, list], index: list[int], times: int = 1) -> dict[str, list]:
    """The columns of rows `index`, each row repeated `times` times in a row (one entry per completion)."""
    return {k: [v[i] for i in index for _ in range(times)] for k, v in columns.items()}


def check_rewards(rewards: Mapping[str, float], options: Mapping[str, Mapping[str, Any]] | None,
                  columns: Mapping[str, list], n: int, where: str = "data") -> None:
    """Fail early, with one line, on what would only fail at the first scoring: unknown reward
    names or modules, bad weights, options for a reward that is not used, and built-in rewards
    whose columns are missing from some of the `n` records (`columns` from `reward_columns`)."""
    from tunesmith.registry import REWARDS

    if not rewards:
        raise TunesmithError("grpo.rewards: name at least one reward with its weight, e.g. {exact_match: 1.0}")
    options = dict(options or {})
    unknown = sorted(set(options) - set(rewards))
    if unknown:
        raise TunesmithError(f"grpo.reward_options: options given for {', '.join(map(repr, unknown))}, which is not among grpo.rewards")
    for name, weight in rewards.items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise TunesmithError(f"grpo.rewards: reward {name!r} has weight {weight!r}; weights must be finite numbers")
        REWARDS.get(name)  # raises for unknown names and unimportable "module:function"
        for col in REQUIRED_COLUMNS.get(name, ()):
            values = columns.get(col)
            missing = n if values is None else sum(1 for v in values if v is None)
            if missing:
                raise TunesmithError(
                    f"{where}: reward {name!r} needs a {col!r} field in every record; {missing} of {n} records lack it "
                    f"(prompt_completion data offers its completion as 'answer')"
                )
        if name == "format_regex" and not options.get(name, {}).get("pattern"):
            values = columns.get("format_pattern") or [None] * n
            if any(not v for v in values):
                raise TunesmithError(f"{where}: reward 'format_regex' needs a pattern: grpo.reward_options "
                                     "{format_regex: {pattern: ...}} or a 'format_pattern' field in every record")


def load_reward_prompts(data_path, rewards: Mapping[str, float], reward_options: Mapping[str, Mapping[str, Any]] | None = None,
                        *, limit: int | None = None, data_type: str | None = None) -> tuple[list[dict], dict[str, list]]:
    """(rows, reward columns) of a prompt file (the first `limit` rows), with the rewards checked
    against its columns: everything that can fail does, before a model loads."""
    from tunesmith.data.schemas import load_dataset

    ds = load_dataset(data_path, data_type, accept=ACCEPTS)
    rows = ds.rows()[:limit] if limit else ds.rows()
    if not rows:
        raise TunesmithError(f"{data_path}: no records to score")
    columns = reward_columns(rows, ds.type)
    check_rewards(rewards, reward_options, columns, len(rows), where=str(data_path))
    return rows, columns


def mean_reward(model_spec: str, data_path: str, rewards: Mapping[str, float], *, limit: int | None = None,
                system: str | None = None, reward_options: Mapping[str, Mapping[str, Any]] | None = None,
                max_new_tokens: int = 64, batch_size: int = 16, data_type: str | None = None,
                n_resamples: int = 1000, seed: int = 0) -> dict:
    """Mean weighted reward of a model's greedy completions to a dataset's prompts.

    model_spec: anything `load_model` takes (built-in name, HF directory, run directory).
    data_path: a prompt_only (or prompt_completion) file; its columns go to the rewards as
    in training. `system` defaults to the system prompt the run was trained with.
    Returns {"model", "data", "n", "mean_reward", "ci": {"low", "high"}, "parts": {reward:
    mean unweighted value}, "per_item": [total reward per prompt], "completions": [...]}; the
    CI is a 95% percentile bootstrap over prompts.
    """
    from tunesmith.runs import run_system_prompt
    from tunesmith.data.templating import to_messages
    from tunesmith.eval.stats import bootstrap_ci
    from tunesmith.generation import GenerationSettings, generate_batch
    from tunesmith.models.loading import inference_device, load_model
    from tunesmith.rewards import combine

    rows, columns = load_reward_prompts(data_path, rewards, reward_options, limit=limit, data_type=data_type)
    system = system if system is not None else run_system_prompt(str(model_spec))
    model, tok, _ = load_model(str(model_spec), device=inference_device())
    convs = [to_messages(r, "prompt_only", system) for r in rows]
    completions = generate_batch(model, tok, convs, GenerationSettings(max_new_tokens=max_new_tokens), batch_size=batch_size)
    del model
    total, parts = combine(rewards, [r["prompt"] for r in rows], completions, columns, options=reward_options)
    ci = bootstrap_ci(total, n_resamples=n_resamples, seed=seed)
    return {
        "model": str(model_spec), "data": str(data_path), "n": len(rows), "mean_reward": ci["value"],
        "ci": {"low": ci["low"], "high": ci["high"]},
        "parts": {k: sum(v) / len(v) for k, v in parts.items()},
        "per_item": total, "completions": completions,
    }


def reward_gain(model_spec: str, base_spec: str, data_path: str, rewards: Mapping[str, float], **kwargs) -> dict:
    """Mean reward of `model_spec` minus that of `base_spec` (e.g. a GRPO run and its starting
    model) on the same prompts: {"model": mean_reward(...), "base": mean_reward(...), "gain",
    "ci": {"low", "high"}, "p_value"} from a paired bootstrap over prompts. `kwargs` go to
    `mean_reward` for both (limit, reward_options, max_new_tokens, ...); each side uses its own
    run's system prompt unless `system=` is given."""
    from tunesmith.eval.stats import paired_bootstrap

    model = mean_reward(model_spec, data_path, rewards, **kwargs)
    base = mean_reward(base_spec, data_path, rewards, **kwargs)
    d = paired_bootstrap(base["per_item"], model["per_item"], n_resamples=kwargs.get("n_resamples", 1000),
                         seed=kwargs.get("seed", 0))
    return {"model": model, "base": base, "gain": d["diff"], "ci": {"low": d["low"], "high": d["high"]},
            "p_value": d["p_value"]}
