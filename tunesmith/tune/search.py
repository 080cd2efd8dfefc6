"""`tunesmith tune`: a hyperparameter search over one training config, built on Optuna (a
well-kept library: its TPE sampler, pruners and journal storage are what we would otherwise
write and test ourselves).

Layout, `runs/<name>-tune/`:
  search.json   what is searched (config, space, metric, trials) and its key
  journal.log   Optuna's journal: every trial's parameters, reports and result, appended and
                fsynced one record at a time, so a search killed at any point (SIGKILL included)
                continues with --resume and never repeats a finished trial
  data/         the train/validation split every trial shares (carved once, seeded)
  trials/<name>-tNNN/   each trial: an ordinary run directory (status completed or pruned)
  best.yaml, trials.csv, trials.md, importances.json, tune.html, summary.json (tunesmith.tune.outputs)

A trial killed mid-training is marked failed ("interrupted") on --resume and its parameters are
tried again by the next trial, which continues the same run directory from its checkpoint.
Selection reads the validation split only: a TrainConfig has no test split, and a study hands a
tuned arm its validation split, never data.test.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from tunesmith import __version__, configlib
from tunesmith.atomic import write_json_atomic, write_text_atomic
from tunesmith.config import TrainConfig
from tunesmith.errors import ConfigError, TunesmithError
from tunesmith.rundir import check_name, remove_tree, run_lock
from tunesmith.runs import read_metrics, update_run
from tunesmith.tune.space import SearchSpace, metric_for, resolve_space

PROMPTING = ("prompt", "rag")
TENTHS = 10  # trials report their validation metric at each tenth of their training (pruning steps)


class TrialPruned(BaseException):
    """Raised from a validation to stop a weak trial. A BaseException (like KeyboardInterrupt) so
    that the training code's clean-up of failed starts leaves the pruned run's files in place."""

    def __init__(self, step: int, value: float):
        super().__init__(f"pruned at step {step} (validation {value:.4g})")
        self.step, self.value = step, value


@dataclass
class Search:
    cfg: TrainConfig  # the base config (the user's data paths)
    space: SearchSpace
    trials: int
    metric: str
    direction: str
    root: Path
    train: str  # the split every trial trains on
    validation: str  # and validates on

    @property
    def trials_dir(self) -> Path:
        return self.root / "trials"


def tune_dir(cfg: TrainConfig) -> Path:
    return Path(cfg.output_dir) / f"{cfg.name}-tune"


def _write_if_changed(path: Path, text: str) -> str:
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        write_text_atomic(path, text)
    return str(path)


def split_data(cfg: TrainConfig, root: Path) -> tuple[str, str]:
    """(train, validation) files every trial uses: data.validation when given, else a seeded
    data.val_fraction of data.train carved once into root/data/."""
    from tunesmith.data.schemas import load_dataset
    from tunesmith.data.splits import split_rows

    if not cfg.data.train:
        raise ConfigError("data.train: a search needs data (the few-shot pool or training set, and its validation split)")
    if cfg.data.validation:
        return cfg.data.train, cfg.data.validation
    if cfg.data.val_fraction <= 0:
        raise ConfigError("data.val_fraction: a search selects on a validation split; set it above 0 or give data.validation")
    rows = [dict(r) for r in load_dataset(cfg.data.train, cfg.data.type).rows()]
    train, val = split_rows(rows, cfg.data.val_fraction, cfg.seed)
    if not val:
        raise ConfigError(f"{cfg.data.train}: too few records to carve a validation split ({len(rows)})")
    dump = lambda rs: "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rs)  # noqa: E731
    return _write_if_changed(root / "data" / "train.jsonl", dump(train)), _write_if_changed(root / "data" / "validation.jsonl", dump(val))


def search_key(cfg: TrainConfig, space: SearchSpace, trials: int, metric: str, files: list[str | None]) -> str:
    """What makes two searches the same: the config (without name and paths), the space, the
    budget, the metric, the data's contents and the code version."""
    from tunesmith.data.io import file_sha256

    c = configlib.to_dict(cfg)
    for k in ("name", "output_dir"):
        c.pop(k, None)
    c["data"] = {k: v for k, v in c["data"].items() if k not in ("train", "validation")}
    data = [file_sha256(f) if f and Path(f).exists() else None for f in files]
    src = {"cfg": c, "space": configlib.to_dict(space), "trials": trials, "metric": metric, "data": data, "code": __version__}
    return hashlib.sha256(json.dumps(src, sort_keys=True, default=str).encode()).hexdigest()[:20]


def trial_config(s: Search, params: dict, run_name: str) -> TrainConfig:
    """The base config with a trial's parameters, on the shared split, inside trials/."""
    overrides = [("name", run_name), ("output_dir", str(s.trials_dir)), ("data.train", s.train)]
    if s.cfg.regimen not in PROMPTING:
        overrides.append(("data.validation", s.validation))
        if s.metric == "val_exact_match":
            overrides.append(("training.select_metric", "exact_match"))
    overrides += list(params.items())
    try:
        data = configlib.apply_overrides(configlib.to_dict(s.cfg), TrainConfig, overrides)
        return configlib.from_dict(TrainConfig, data, source=f"trial {run_name}")
    except ConfigError as e:
        raise ConfigError(f"trial parameters {params}: {e}") from None


def _suggest(trial, key: str, kind: str, rng):
    if kind == "choice":
        return trial.suggest_categorical(key, list(rng.choices))
    if kind == "int":
        return trial.suggest_int(key, int(rng.low), int(rng.high), step=int(rng.step or 1), log=rng.log)
    return trial.suggest_float(key, rng.low, rng.high, step=rng.step or None, log=rng.log)


def config_point(cfg: TrainConfig, resolved: dict) -> dict:
    """The config's own value of every searched option that lies in its range or choices (the
    untuned configuration as a trial; an option whose value lies outside is left to the sampler)."""
    point = {}
    for key, (kind, rng) in resolved.items():
        value = cfg
        for part in key.split("."):
            value = getattr(value, part, None)
        if kind == "choice":
            same = [c for c in rng.choices if c == value and isinstance(c, bool) == isinstance(value, bool)]
            if same:
                point[key] = same[0]
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and rng.low <= value <= rng.high:
            step = rng.step or (1 if kind == "int" else None)
            if step is None or abs((value - rng.low) / step - round((value - rng.low) / step)) < 1e-9:
                point[key] = int(value) if kind == "int" else float(value)
    return point


def _reporter(trial, metric: str):
    """Hears every validation (training.selection.reporting) and reports the trial's metric at
    each tenth of training passed, so trials of different lengths compare at the same steps."""
    seen = {"tenth": 0}

    def hear(step: int, total: int | None, metrics: dict) -> None:
        value = metrics.get(metric)
        if value is None or not total:
            return
        tenth = min(TENTHS, (TENTHS * step) // total)
        if tenth <= seen["tenth"]:
            return
        for k in range(seen["tenth"] + 1, tenth + 1):
            trial.report(float(value), k)
        seen["tenth"] = tenth
        if tenth < TENTHS and trial.should_prune():
            raise TrialPruned(step, float(value))

    return hear


def trial_objective(run: Path, metric: str) -> float:
    """The metric at the checkpoint the run exports (its best by its selection metric), read
    from its metrics.jsonl; the last validation when it exports its last weights."""
    meta = json.loads((run / "run.json").read_text())
    vals = [r for r in read_metrics(run / "metrics.jsonl") if metric in r]
    if not vals:
        raise TunesmithError(f"{run}: no {metric} was logged (is there a validation split?)")
    if meta.get("exported") != "last" and meta.get("best_step") is not None:
        at = [r for r in vals if r.get("step") == meta["best_step"]]
        if at:
            return float(at[-1][metric])
    return float(vals[-1][metric])


def _prompt_value(s: Search, run: Path, progress: bool) -> float:
    """A prompting or retrieval trial's score: the eval task's primary metric on the validation split."""
    from tunesmith.eval.config import EvalConfig
    from tunesmith.eval.runner import evaluate

    e = s.space.eval
    with open(s.validation, encoding="utf-8") as fh:
        first = json.loads(fh.readline() or "{}")
    # Question/answer records scored as classification: the answer is the label.
    fields = {"label": "completion"} if e.task == "classification" and "label" not in first and "completion" in first else {}
    ecfg = EvalConfig(fields=fields, data=s.validation, task=e.task, name="validation", max_new_tokens=e.max_new_tokens, limit=e.limit,
                      batch_size=e.batch_size, stop=list(e.stop), labels=e.labels, seed=s.cfg.seed, output_dir=str(s.trials_dir))
    res = evaluate(str(run), ecfg, progress=progress)
    return float(res["metrics"][res["primary_metric"]]["value"])


def run_trial(s: Search, tcfg: TrainConfig, trial, progress: bool) -> float:
    """Train (or prepare) one trial's run and return its objective; TrialPruned propagates."""
    from tunesmith.training.selection import reporting

    run = tcfg.run_dir
    module = importlib.import_module(f"tunesmith.regimens.{tcfg.regimen}")
    resume = tcfg.regimen not in PROMPTING and (run / "checkpoints" / "state.json").exists()
    with run_lock(run):
        meta = json.loads((run / "run.json").read_text()) if (run / "run.json").exists() else {}
        if meta.get("status") != "completed":
            with reporting(_reporter(trial, s.metric)):
                module.train(tcfg, resume=resume, overwrite=not resume, progress=progress)
    if tcfg.regimen in PROMPTING:
        return _prompt_value(s, run, progress)
    return trial_objective(run, s.metric)


def _recover(study, trials_dir: Path) -> None:
    """Trials left RUNNING by a killed search: mark them failed (interrupted) and queue their
    parameters again, for a trial that continues the same run directory."""
    import optuna

    queued = {t.user_attrs.get("redo_of") for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))}
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if t.number not in queued:  # queued first: a kill between the two steps cannot lose the trial
            study.enqueue_trial(t.params, user_attrs={"run": t.user_attrs.get("run"), "redo_of": t.number})
        study._storage.set_trial_user_attr(t._trial_id, "interrupted", True)
        study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)


def finished(study) -> list:
    """Trials that count against the budget: completed, pruned, or failed on their own (an
    interrupted trial is tried again and does not count)."""
    import optuna

    S = optuna.trial.TrialState
    return [t for t in study.get_trials(deepcopy=False) if t.state in (S.COMPLETE, S.PRUNED)
            or (t.state == S.FAIL and not t.user_attrs.get("interrupted"))]


def _repair_journal(path: Path) -> None:
    """Drop a torn last record (a kill mid-append) and a lock left by a killed writer; the
    search's own run lock guarantees no other process is writing."""
    if path.exists():
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            write_text_atomic(path, data[: data.rfind(b"\n") + 1].decode("utf-8"))
    lock = Path(str(path) + ".lock")
    if lock.is_symlink() or lock.exists():
        lock.unlink()


def open_study(s: Search):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    journal = s.root / "journal.log"
    _repair_journal(journal)
    storage = JournalStorage(JournalFileBackend(str(journal)))
    pruner = {"median": lambda: optuna.pruners.MedianPruner(n_startup_trials=s.space.startup_trials, n_warmup_steps=s.space.warmup_tenths),
              "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=1, max_resource=TENTHS, reduction_factor=3),
              "none": lambda: optuna.pruners.NopPruner()}[s.space.pruner]()
    return optuna.create_study(study_name="tune", storage=storage, direction=s.direction, pruner=pruner, load_if_exists=True)


def _sampler(s: Search, n_done: int):
    """A sampler seeded by the search seed and the number of trials so far: the search proposes
    the same trials whether or not it was interrupted and resumed in between."""
    import optuna

    seed = (s.space.seed + 7919 * n_done) % (2**32)
    if s.space.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, min(10, s.trials // 3)))


def _one_trial(s: Search, study, resolved: dict, progress: bool) -> None:
    import optuna

    study.sampler = _sampler(s, len(study.get_trials(deepcopy=False)))
    trial = study.ask()
    params = {k: _suggest(trial, k, kind, rng) for k, (kind, rng) in resolved.items()}
    same = next((t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)) if t.params == params), None)
    if same is not None:  # a repeat of a finished configuration (small categorical spaces): same seed, same result
        for k, v in (("duplicate_of", same.number), ("run", same.user_attrs.get("run")), ("seconds", 0.0)):
            trial.set_user_attr(k, v)
        study.tell(trial, same.value)
        return
    run_name = trial.user_attrs.get("run") or f"{s.cfg.name}-t{trial.number:03d}"
    trial.set_user_attr("run", run_name)
    t0 = time.time()
    try:
        tcfg = trial_config(s, params, run_name)
        value = run_trial(s, tcfg, trial, progress)
    except TrialPruned as p:
        trial.set_user_attr("seconds", round(time.time() - t0, 2))
        update_run(s.trials_dir / run_name, status="pruned", pruned_at_step=p.step, pruned_value=p.value)
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        return
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:  # a diverging trial (non-finite loss), an impossible combination: failed, counted
        trial.set_user_attr("error", f"{type(e).__name__}: {e}"[:500])
        trial.set_user_attr("seconds", round(time.time() - t0, 2))
        if (s.trials_dir / run_name / "run.json").exists():
            update_run(s.trials_dir / run_name, status="failed", error=f"{type(e).__name__}: {e}"[:500])
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return
    trial.set_user_attr("seconds", round(time.time() - t0, 2))
    study.tell(trial, value)


def prepare_search(cfg: TrainConfig, space: SearchSpace, *, trials: int, metric: str | None, root: Path,
                   resume: bool, overwrite: bool) -> Search:
    """Check everything, then make (or reopen) the search directory."""
    check_name(root.name, "name")
    name, direction = metric_for(cfg.regimen, metric)
    resolve_space(cfg, space)  # a bad space fails before anything is written
    exists = (root / "search.json").exists()
    if exists and not (resume or overwrite):
        raise TunesmithError(f"{root} already holds a search; pass --resume to continue it or --overwrite to start over")
    if resume and not exists:
        raise TunesmithError(f"{root}: nothing to resume (no search.json); drop --resume to start this search")
    if overwrite and not resume and root.exists():
        remove_tree(root, root.parent)
    root.mkdir(parents=True, exist_ok=True)
    train, val = split_data(cfg, root)
    key = search_key(cfg, space, trials, name, [cfg.data.train, cfg.data.validation, cfg.rag.corpus if cfg.regimen == "rag" else None])
    if exists and resume:
        old = json.loads((root / "search.json").read_text())
        if old.get("key") != key:
            raise TunesmithError(f"{root}: the config, space, metric, budget or data changed since this search began; "
                                 "pass --overwrite to start a new search (or restore them to continue)")
    else:
        write_json_atomic(root / "search.json", {"key": key, "trials": trials, "metric": name, "direction": direction,
                                                 "regimen": cfg.regimen, "config": configlib.to_dict(cfg), "space": configlib.to_dict(space)})
    return Search(cfg, space, trials, name, direction, root, train, val)


def run_search(s: Search, *, timeout_min: float | None = None, progress: bool = True, inner_progress: bool = False):
    """Run trials until `s.trials` have finished (or the timeout: no new trial starts after it);
    returns the Optuna study."""
    from tqdm.auto import tqdm

    resolved = resolve_space(s.cfg, s.space)
    study = open_study(s)
    _recover(study, s.trials_dir)
    if s.space.start_from_config and not study.trials and (point := config_point(s.cfg, resolved)):
        study.enqueue_trial(point, user_attrs={"from_config": True})
    t0 = time.time()
    done = len(finished(study))
    bar = tqdm(total=s.trials, initial=done, unit="trial", desc=f"tune {s.cfg.name}", disable=not progress, dynamic_ncols=True)
    try:
        while done < s.trials:
            if timeout_min is not None and time.time() - t0 > timeout_min * 60:
                break
            _one_trial(s, study, resolved, inner_progress)
            now = len(finished(study))
            bar.update(now - done)
            done = now
            best = _best(study)
            if best is not None:
                bar.set_postfix({s.metric: f"{best.value:.4g}", "pruned": sum(t.state.name == "PRUNED" for t in study.trials)})
    finally:
        bar.close()
    return study


def _best(study):
    try:
        return study.best_trial
    except ValueError:  # no completed trial yet
        return None
