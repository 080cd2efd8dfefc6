"""Tuned arms of a study: before the arms run, every arm with `tune:` gets a hyperparameter search
(tunesmith.tune, on Optuna: a well-kept library whose sampler, pruners and journal we reuse) with
the same trial budget, on the study's validation split only (never data.test); its best
parameters then go into the arm's config, which the study trains and tests like any other arm.

Searches live in `<study>/tune/<arm>/` and are cached like arms: the key is the arm's config,
the search space, the budget, the metric, the data files' contents and the code version. A
re-run study does no tuning work; a changed space (or config, data, budget) reruns only that
arm's search; a search killed half-way continues from its journal.

Prompting and retrieval trials are scored with the study's evaluation settings (task, answer
length, stop strings, labels, item limit) on the validation split, so an arm is chosen by what
the test measures, on items the test never sees."""

from __future__ import annotations

import json
from pathlib import Path

from tunesmith.errors import ConfigError, TunesmithError


def search_root(study, job) -> Path:
    name = job.arm if len(study.models) == 1 else f"{job.arm}__{Path(job.model).name}"
    return study.study_dir / "tune" / name


def _search_cfg(job, prep):
    """The arm's config as the search starts from it, with the study's validation split."""
    from dataclasses import replace

    cfg = job.cfg
    if cfg.regimen in ("prompt", "rag", "grpo", "sft") and not cfg.data.validation:
        if not prep.validation:
            raise ConfigError(f"arms.{job.arm}.tune: the search selects on a validation split; set data.val_fraction > 0 "
                              "or data.validation in the study")
        cfg = replace(cfg, data=replace(cfg.data, validation=prep.validation))
    return cfg


def _space(study, arm):
    from tunesmith.tune.space import SearchEval, load_space

    space = load_space(arm.tune.space)
    e = study.eval
    # Trials are scored as the test is (its task and settings), on the validation split.
    space.eval = SearchEval(task=e.task, max_new_tokens=e.max_new_tokens, limit=e.limit, batch_size=e.batch_size,
                            stop=list(e.stop), labels=e.labels)
    return space


def _search(study, job, arm, prep, progress: bool) -> dict:
    from tunesmith.atomic import write_json_atomic
    from tunesmith.rundir import run_lock
    from tunesmith.tune.outputs import write_outputs
    from tunesmith.tune.search import prepare_search, run_search, search_key
    from tunesmith.tune.space import metric_for

    cfg, space = _search_cfg(job, prep), _space(study, arm)
    trials = arm.tune.trials or study.tune_trials
    metric, _ = metric_for(cfg.regimen, arm.tune.metric)
    key = search_key(cfg, space, trials, metric, [cfg.data.train, cfg.data.validation, cfg.rag.corpus if cfg.regimen == "rag" else None])
    root = search_root(study, job)
    prev = json.loads((root / "summary.json").read_text()) if (root / "summary.json").exists() else {}
    if prev.get("key") == key and prev.get("finished", 0) >= trials:
        return {**prev, "cached": True}
    started = json.loads((root / "search.json").read_text()).get("key") if (root / "search.json").exists() else None
    with run_lock(root):
        s = prepare_search(cfg, space, trials=trials, metric=metric, root=root, resume=started == key, overwrite=started != key)
        summary = {**write_outputs(s, run_search(s, progress=progress)), "key": key}
    write_json_atomic(root / "summary.json", summary)
    return {**summary, "cached": False}


def _say_tuning(study, job, arm) -> None:
    print(f"\n== study {study.name}: tuning arm {job.arm} ({job.regimen}, {arm.tune.trials or study.tune_trials} trials)",
          flush=True, file=__import__("sys").stderr)


def _searches(study, todo: list, prep, progress: bool, pool) -> dict:
    """job id -> search result for each (job, arm) of `todo`: here one after another, or at once
    on a worker pool (tunesmith.study.fanout; searches of different arms are independent)."""
    if pool is None:
        out = {}
        for job, arm in todo:
            _say_tuning(study, job, arm)
            out[job.id] = _search(study, job, arm, prep, progress)
        return out
    from types import SimpleNamespace

    from tunesmith.study.fanout import run_ready

    items = [SimpleNamespace(id=job.id, depends=[], job=job, arm=arm) for job, arm in todo]

    def submit(item):
        _say_tuning(study, item.job, item.arm)
        return pool.submit(_search, study, item.job, item.arm, prep, False)

    return run_ready(items, pool, submit, lambda item, r: r)


def tune_arms(study, jobs, prep, progress: bool = True, pool=None) -> dict:
    """(arm, model) -> {"params", "trials", "seconds", "metric", "value", "dir", "states", "cached"}
    for every tuned arm, searched once per model (with the study's first seed); on `pool`'s
    workers when given."""
    arms = {a.name: a for a in study.arms if a.tune is not None}
    todo = [(job, arms[job.arm]) for job in jobs if job.arm in arms and job.seed == study.seeds[0]]
    found = _searches(study, todo, prep, progress, pool)
    out = {}
    for job, _ in todo:
        r = found[job.id]
        if not r.get("best"):
            raise TunesmithError(f"arm {job.arm}: no trial of its search completed; see {search_root(study, job) / 'trials.md'}")
        out[(job.arm, job.model)] = {"params": r["best"]["params"], "trials": r["trials"], "seconds": r["seconds"],
                                     "metric": r["metric"], "value": r["best"]["value"], "states": r["states"],
                                     "dir": str(search_root(study, job)), "cached": r["cached"]}
    return out


def tuning_summary(arms: list[dict]) -> dict | None:
    """results.json's "tuning": the budget, which arms were tuned and which were not."""
    tuned = [a for a in arms if a.get("tuning")]
    if not tuned:
        return None
    return {"trials": sorted({a["tuning"]["trials"] for a in tuned}), "tuned": [a["id"] for a in tuned],
            "untuned": [a["id"] for a in arms if not a.get("tuning")],
            "seconds": round(sum(a["tuning"]["seconds"] for a in tuned), 1)}


def tuning_clause(results: dict) -> str:
    """The verdict's opening when arms were tuned: 'After equal tuning (12 trials per arm): '."""
    t = results.get("tuning")
    if not t:
        return ""
    budget = "/".join(str(k) for k in t["trials"])
    rest = f"; not tuned: {', '.join(t['untuned'])}" if t["untuned"] else ""
    return f"After equal tuning ({budget} trials per tuned arm{rest}): "


def tuning_table(results: dict) -> dict | None:
    """The report's Tuning table: per tuned arm, the tuned parameters, trials and tuning time."""
    from tunesmith.study.verdict import fmt_duration

    def show(v) -> str:
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    rows = []
    for a in results.get("arms", []):
        t = a.get("tuning")
        if not t:
            continue
        states = ", ".join(f"{n} {k}" for k, n in sorted(t.get("states", {}).items()))
        rows.append([a["id"], ", ".join(f"{k}={show(v)}" for k, v in t["params"].items()), f"{t['trials']} ({states})",
                     f"{t['metric']} {show(t['value'])}", fmt_duration(t["seconds"])])
    if not rows:
        return None
    return {"caption": "Tuning (hyperparameter search on the validation split, before the test)", "rows": rows,
            "header": ["Arm", "Tuned parameters", "Trials", "Best validation", "Tuning time"],
            "notes": ["Every tuned arm had the same trial budget; the arm was then trained with its best parameters and "
                      "scored on the test split like every other arm. Searches: <study>/tune/<arm>/tune.html."]}
