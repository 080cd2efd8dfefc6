"""`tunesmith study`: run every job of a study (train or prepare, then evaluate), skipping jobs
whose results are cached and continuing interrupted ones, then aggregate results.json and write
the report.

A job's state lives in its run directory plus studies/<name>/state.json (job id -> key): a
killed study resumes a half-trained arm from its checkpoint, reuses every finished arm, and
reruns only arms whose config, data or code version changed (and the arms built on them).

Arms run one after another in this process, or (--workers N, --ray ADDRESS) those that are ready
run at once elsewhere (tunesmith.study.fanout); either way this process alone writes state.json,
timing.json, results.json and the report, so the figures are those of a serial run."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from tunesmith.errors import TunesmithError
from tunesmith.study.plan import WEIGHT_REGIMENS, Job, plan
from tunesmith.atomic import write_json_atomic

THROUGHPUT_TOK_S = 200.0  # measured: LoRA/full SFT of the 135M default model, bf16, 2 CPU cores
EVAL_S_PER_ITEM = 0.5


def validate_data(study, jobs: list[Job]) -> None:
    """Every data file every job will read must load, with the right type, before any training."""
    from tunesmith.data.schemas import load_dataset
    from tunesmith.eval.sources import read_records

    accepts = {"sft": ("prompt_completion", "messages"), "prompt": ("prompt_completion", "messages"),
               "rag": ("prompt_completion", "messages"), "grpo": ("prompt_only", "prompt_completion"),
               "cpt": ("text",), "head": ("classification",), "dpo": ("preference",)}
    seen = set()
    for j in jobs:
        key = (j.cfg.data.train, j.regimen)
        if j.cfg.data.train and key not in seen:
            load_dataset(j.cfg.data.train, j.cfg.data.type, accept=accepts[j.regimen])
            seen.add(key)
    if study.data.corpus:
        load_dataset(study.data.corpus, "text")
    import dataclasses

    from tunesmith.eval.tasks import build_items
    from tunesmith.study.evaluate import test_eval_cfg

    cfg = test_eval_cfg(study)
    # every test item must be one the task can ask and score (fields, conversations, labels)
    build_items(read_records(cfg), dataclasses.replace(cfg, shots=0), None)
    if study.eval.task == "classification" and any(j.regimen == "head" for j in jobs):
        load_dataset(study.data.test, "classification")  # a head reads {text, label}
    for f, t in ((study.data.classification_test, "classification"), (study.data.preference_test, "preference")):
        if f:
            load_dataset(f, t)


def estimate(study, jobs: list[Job]) -> list[dict]:
    """Rough tokens and minutes per job, for --dry-run and the ETA (CPU figures)."""
    from tunesmith.api import token_counter
    from tunesmith.data.schemas import load_dataset
    from tunesmith.eval.sources import read_records

    from tunesmith.study.evaluate import test_eval_cfg

    n_test = len(read_records(test_eval_cfg(study)))
    counters, tokens_of = {}, {}
    rows = []
    for j in jobs:
        tokens = 0
        if j.regimen in WEIGHT_REGIMENS:
            f = j.cfg.data.train
            if f not in tokens_of:
                ds = load_dataset(f)
                counters.setdefault(j.model, token_counter(j.model) if Path(j.model).exists() or "/" not in j.model else None)
                tokens_of[f] = sum(counters[j.model](ds.rows(), ds.type)) if counters[j.model] else 0
            t = j.cfg.training
            tokens = int(tokens_of[f] * (t.epochs if not t.max_steps else 1.0))
            if t.max_steps:
                tokens = min(tokens_of[f] * 10, t.max_steps * t.batch_size * t.gradient_accumulation_steps * j.cfg.data.max_length)
            if j.regimen == "dpo":
                tokens *= 2  # chosen and rejected
            if j.regimen == "grpo":
                tokens *= j.cfg.grpo.group_size
        minutes = tokens / THROUGHPUT_TOK_S / 60 + (n_test * EVAL_S_PER_ITEM / 60 if j.report else 0)
        rows.append({"job": j.id, "regimen": j.regimen, "model": j.model, "seed": j.seed, "after": ",".join(j.depends) or "-",
                     "trained_tokens": tokens, "minutes": round(minutes, 1)})
    return rows


def format_plan(rows: list[dict]) -> str:
    head = f"{'arm':<28}{'regimen':<9}{'builds on':<16}{'est. tokens':>12}{'est. min':>10}"
    lines = [head] + [f"{r['job']:<28}{r['regimen']:<9}{r['after']:<16}{r['trained_tokens']:>12,}{r['minutes']:>10.1f}" for r in rows]
    lines.append(f"{'total':<53}{sum(r['trained_tokens'] for r in rows):>12,}{sum(r['minutes'] for r in rows):>10.1f}")
    return "\n".join(lines)


def data_lines(summary: dict) -> list[str]:
    """What the study derived from its data (Prepared.summary), one line per kind (printed with the plan)."""
    out = []
    for name, d in summary.items():
        pol = f", {d['policy_examples']} of them out-of-domain policy examples" if d.get("policy_examples") else ""
        if d.get("validation_source"):
            out.append(f"data.{name}: {d['records']} records{pol}; validation: {d['validation_source']} ({d['validation_records']} records)")
        else:
            out.append(f"data.{name}: {d['records']} records{pol}; validation: {d.get('validation_records', 0)} carved "
                       f"({d['val_fraction']:.0%}, seed {d['split_seed']}), {d['train_records']} left for training")
    return out


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_job(job: Job, same: bool, progress: bool) -> dict:
    """Train (or prepare) one job unless its cached run is complete; resume a killed one.
    `same`: the run directory was made for this job's key (its config, data and code)."""
    from tunesmith import api

    meta_path = job.run_dir / "run.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else None
    if meta and same and meta.get("status") == "completed":
        return {"cached": True, **meta}
    resume = bool(meta and same and meta.get("status") == "running" and job.regimen in WEIGHT_REGIMENS)
    return api.train(job.cfg, resume=resume, overwrite=not resume, progress=progress)


def execute_job(study, job, same: bool, progress: bool) -> dict:
    """Train (or prepare) and evaluate one job: its outcome. A failing arm is reported, not
    raised (one failing arm must not lose the others); a user error (TunesmithError) is raised.
    Runs in the study's process, or in a worker (tunesmith.study.fanout)."""
    try:
        out = {"status": "completed", **run_job(job, same, progress)}
        from tunesmith.training.runtime import release_free_memory

        release_free_memory()  # the training's freed activations go back before evaluation
        if job.report:
            from tunesmith.study.evaluate import evaluate_job

            out["eval"] = evaluate_job(study, job, progress)
        return out
    except TunesmithError:
        raise
    except Exception as e:
        _say(f"arm {job.id} failed: {type(e).__name__}: {e}")
        return {"status": "failed", "error": f"{type(e).__name__}: {e}"}


class _Ledger:
    """state.json (job id -> key) and timing.json (seconds per job key), written by the study's
    own process only, whether the arms run here or in workers."""

    def __init__(self, sdir: Path):
        self.state_path, self.timing_path = sdir / "state.json", sdir / "timing.json"
        self.state = json.loads(self.state_path.read_text()) if self.state_path.exists() else {}
        # Seconds spent on each job's current key, summed over invocations (a study continued after
        # an interrupt reports the time of all its parts, not only of the last invocation).
        self.timing = json.loads(self.timing_path.read_text()) if self.timing_path.exists() else {}

    def start(self, job: Job) -> bool:
        """Whether the job's run directory was made for its current key; records the key first,
        so that a kill from here on resumes this key."""
        same = self.state.get(job.id) == job.key
        if not same:
            self.state[job.id] = job.key
            write_json_atomic(self.state_path, self.state)
        return same

    def spent(self, job: Job, seconds: float) -> None:
        prev = self.timing.get(job.id, {})
        total = (prev.get("seconds", 0.0) if prev.get("key") == job.key else 0.0) + seconds
        self.timing[job.id] = {"key": job.key, "seconds": round(total, 1)}
        write_json_atomic(self.timing_path, self.timing)


def _run_serial(study, jobs: list[Job], ledger: _Ledger, eta: dict, progress: bool) -> dict[str, dict]:
    outcomes: dict[str, dict] = {}
    for i, job in enumerate(jobs):
        remaining = sum(eta[j.id] for j in jobs[i:])
        queued = len(jobs) - i - 1
        _say(f"\n== study {study.name}: arm {i + 1}/{len(jobs)} {job.id} ({job.regimen}) | done {i}, queued {queued} | ETA ~{remaining:.0f} min")
        failed_parent = [d for d in job.depends if outcomes.get(d, {}).get("status") != "completed"]
        if failed_parent:
            outcomes[job.id] = {"status": "skipped", "error": f"builds on {', '.join(failed_parent)}, which did not complete"}
            continue
        same = ledger.start(job)
        t_job = time.time()
        outcomes[job.id] = execute_job(study, job, same, progress)
        ledger.spent(job, time.time() - t_job)
    return outcomes


def _run_parallel(study, jobs: list[Job], ledger: _Ledger, eta: dict, pool) -> dict[str, dict]:
    """Ready arms at once on `pool`, one line per arm started and finished."""
    from tunesmith.study.fanout import arm_task, fmt_elapsed, run_ready

    n, seen = len(jobs), {"started": 0, "done": 0}
    running: set[str] = set()
    finished: set[str] = set()

    def submit(job: Job):
        seen["started"] += 1
        running.add(job.id)
        left = sum(eta[j.id] for j in jobs if j.id not in finished) / pool.slots  # a rough share per slot
        _say(f"== study {study.name}: arm {seen['started']}/{n} {job.id} ({job.regimen}) started | running {len(running)}, "
             f"done {seen['done']} | ETA ~{left:.0f} min")
        return pool.submit(arm_task, study, job, ledger.start(job))

    def finish(job: Job, r: dict) -> dict:
        seen["done"] += 1
        running.discard(job.id)
        finished.add(job.id)
        ledger.spent(job, r["seconds"])
        out = r["outcome"]
        how = "cached" if out.get("cached") else out["status"]
        _say(f"== study {study.name}: arm {job.id} {how} in {fmt_elapsed(r['seconds'])} | done {seen['done']}/{n}, running {len(running)}")
        return out

    return run_ready(jobs, pool, submit, finish)


def run_study(study, *, dry_run: bool = False, progress: bool = True, fanout=None) -> dict:
    """Run (or, dry_run, plan) a study. `fanout` (tunesmith.study.fanout.FanOut): run ready arms
    in worker processes or on a Ray cluster; None runs every arm here, one after another."""
    from tunesmith.study.fanout import FanOut, check_writable, open_pool
    from tunesmith.study.prepare import prepare_data

    fan = fanout or FanOut()
    fan.validate()
    check_writable(study.study_dir)  # a one-line error, not an OSError from the first derived file
    prep = prepare_data(study)  # once: the plan, the printed sizes and results.json all use it
    jobs = plan(study, prep)
    validate_data(study, jobs)  # clear errors before any training starts
    rows = estimate(study, jobs)
    if dry_run:
        tuned = [f"tuning: arm {a.name}: {a.tune.trials or study.tune_trials} trials before it runs (each about as long as the arm)"
                 for a in study.arms if a.tune is not None]
        return {"plan": rows, "text": format_plan(rows) + "\n\n" + "\n".join(data_lines(prep.summary) + tuned)}
    sdir = study.study_dir
    sdir.mkdir(parents=True, exist_ok=True)
    ledger = _Ledger(sdir)
    for line in data_lines(prep.summary):
        _say(line)
    pool = open_pool(fan, sdir) if fan.parallel else None
    if pool is not None:
        _say(f"== study {study.name}: ready arms run at once on {pool.describe}")
    try:
        if any(a.tune is not None for a in study.arms):
            from tunesmith.study.tuning import tune_arms

            # Searches first (cached like arms), on the validation split; their best parameters go
            # into the tuned arms' configs and keys, and the arms then run like any other.
            jobs = plan(study, prep, tune_arms(study, jobs, prep, progress, pool=pool))
        t0 = time.time()
        eta = {r["job"]: r["minutes"] for r in rows}
        outcomes = _run_serial(study, jobs, ledger, eta, progress) if pool is None else _run_parallel(study, jobs, ledger, eta, pool)
    finally:
        if pool is not None:
            pool.close()
    return _finish(study, jobs, outcomes, ledger, prep, time.time() - t0)


def _finish(study, jobs: list[Job], outcomes: dict, ledger: _Ledger, prep, invocation_seconds: float) -> dict:
    """results.json, the winner and the report, from the jobs' outcomes and recorded times."""
    from tunesmith.study.results import build_results

    timing = ledger.timing
    total = sum(timing[j.id]["seconds"] for j in jobs if j.id in timing and timing[j.id]["key"] == j.key)
    total += sum({j.arm: j.tuning["seconds"] for j in jobs if j.tuning}.values())  # each search once, however many seeds
    results = build_results(study, jobs, outcomes, wall_seconds=total, invocation_seconds=invocation_seconds,
                            prepared=prep.summary)
    from tunesmith.study.verdict import winner

    results["winner"] = winner(results)  # the arm to deploy, with the commands that export and serve it
    write_json_atomic(study.study_dir / "results.json", results)
    from tunesmith.study.report import write_report

    paths = write_report(study.study_dir / "results.json")
    return {"results": results, "paths": {k: str(v) for k, v in paths.items()}}
