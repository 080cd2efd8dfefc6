"""The library API: every CLI command is one of these calls.

    import tunesmith.api as ts
    ts.train("train.yaml", ["training.learning_rate=1e-4"])
    ts.check_data("train.jsonl", model="smollm2-135m-instruct")
    ts.generate("runs/my-run", ["What is our refund window?"])
"""

from __future__ import annotations

from pathlib import Path

from tunesmith.errors import TunesmithError
from tunesmith.runs import run_system_prompt  # noqa: F401 - part of the facade (cli, library users)


def train(config: str | Path | object, overrides=(), *, resume: bool = False, overwrite: bool = False, progress: bool = True) -> dict:
    """Run the regimen a config names; returns the run summary (also in runs/<name>/run.json).

    One process per run directory (a lock); the model is resolved before anything on disk
    changes; `overwrite` replaces the old run only once the new one has succeeded; a start that
    fails before its first checkpoint leaves no directory behind."""
    import importlib

    from tunesmith.config import TrainConfig, load_train_config
    from tunesmith.models.loading import resolve_model
    from tunesmith.rundir import check_name, recover_replacement, remove_tree, replacing, run_lock

    from tunesmith.training import distributed

    cfg = config if isinstance(config, TrainConfig) else load_train_config(config, overrides)
    check_name(cfg.name, "name")
    module = importlib.import_module(f"tunesmith.regimens.{cfg.regimen}")
    if distributed.env_world() > 1:  # under torchrun: one process per rank, rank 0 owns the run directory
        with distributed.session(cfg.regimen, cfg.training):
            return _train_rank(module, cfg, resume=resume, overwrite=overwrite, progress=progress)
    run = cfg.run_dir
    with run_lock(run):
        recover_replacement(run)  # a replacement killed half-way gives the previous run back first
        if overwrite and not resume and (run / "run.json").exists():
            resolve_model(cfg.start_model)  # a typo in model.name must not cost the previous run
        if resume and (run / "checkpoints").is_dir():
            from tunesmith.training.checkpoint import check_resumable

            check_resumable(run / "checkpoints")  # before run.json turns back to "running"
        fresh = not run.exists()
        with replacing(run, overwrite and not resume):
            try:
                return module.train(cfg, resume=resume, overwrite=overwrite, progress=progress)
            except Exception:
                if (fresh or overwrite) and run.exists() and not (run / "checkpoints" / "state.json").exists():
                    remove_tree(run, run.parent)  # nothing worth resuming; the retry starts clean
                raise


def _train_rank(module, cfg, *, resume: bool, overwrite: bool, progress: bool) -> dict:
    """api.train for one rank of a torchrun job: rank 0 takes the run's lock and does what a
    single process does around the regimen (the replace-on-overwrite, the clean-up of a failed
    start); the other ranks only train, writing nothing but their checkpoint shards."""
    import contextlib

    from tunesmith.models.loading import resolve_model
    from tunesmith.rundir import recover_replacement, remove_tree, replacing, run_lock
    from tunesmith.training import distributed

    run = cfg.run_dir
    main = distributed.is_main()
    if main and overwrite and not resume and (run / "run.json").exists():
        resolve_model(cfg.start_model)  # a typo in model.name must not cost the previous run
    if resume and (run / "checkpoints").is_dir():
        from tunesmith.training.checkpoint import check_resumable

        check_resumable(run / "checkpoints")  # every rank: the same one-line error on every rank
    with run_lock(run) if main else contextlib.nullcontext():
        if main:
            recover_replacement(run)
        fresh = not run.exists()
        with replacing(run, overwrite and not resume) if main else contextlib.nullcontext():
            try:
                return module.train(cfg, resume=resume, overwrite=overwrite, progress=progress)
            except Exception:
                if main and (fresh or overwrite) and run.exists() and not (run / "checkpoints" / "state.json").exists():
                    remove_tree(run, run.parent)
                raise


def conversations(model: str, prompts: list[str], system: str | None = None) -> list[list[dict]]:
    """Chat messages for prompts as a model or run expects them: a prompting or retrieval run's
    recipe (template, few-shot turns, passages) is applied; otherwise the run's system prompt."""
    from tunesmith.answering import Answering

    return Answering.of(model).messages(prompts, system)


def token_counter(model: str, max_length: int | None = None, system_prompt: str | None = None):
    """A function counting each normalised record's tokens as training would render them."""
    from tunesmith.data.templating import render_chat, render_text, to_messages
    from tunesmith.models.loading import load_tokenizer

    tok = load_tokenizer(model)

    def count(rows: list[dict], dtype: str) -> list[int]:
        out = []
        for r in rows:
            if dtype == "text":
                out.append(len(render_text(tok, r["text"]).input_ids))
            elif dtype == "classification":
                out.append(len(tok(r["text"])["input_ids"]))
            elif dtype == "preference":
                msgs = to_messages(r, dtype, system_prompt) + [{"role": "assistant", "content": max(r["chosen"], r["rejected"], key=len)}]
                out.append(len(render_chat(tok, msgs, "all").input_ids))
            else:
                msgs = to_messages(r, dtype, system_prompt)
                loss_on = "all" if dtype == "prompt_only" else "assistant"
                out.append(len(render_chat(tok, msgs, loss_on).input_ids))
        return out

    return count


def check_data(path, *, type: str | None = None, model: str | None = None, eval_path=None, max_length: int = 512):
    """Validate a dataset and describe it; returns a CheckReport (report.ok, report.format())."""
    from tunesmith.data.check import check_dataset

    counter = token_counter(model) if model else None
    return check_dataset(path, type, token_counter=counter, max_length=max_length, eval_path=eval_path)


def build_pairs(model: str, data, out, rewards, **kwargs) -> dict:
    """Preference pairs from a reward signal: sample answers per prompt from `model`, score them
    with `rewards` ({name: weight}), keep (best, worst); see tunesmith.pairs.build_pairs."""
    from tunesmith.pairs import build_pairs as _build

    return _build(model, data, out, rewards, **kwargs)


def preview_data(path, *, type: str | None = None, model: str = "smollm2-135m-instruct", index: int = 0,
                 system_prompt: str | None = None, loss_on: str = "assistant") -> str:
    """One rendered example with the trained tokens wrapped in [[ ]]."""
    from tunesmith.data.schemas import load_dataset
    from tunesmith.data.templating import preview, render_chat, render_text, to_messages
    from tunesmith.models.loading import load_tokenizer

    ds = load_dataset(path, type)
    if not 0 <= index < len(ds):
        raise TunesmithError(f"{path}: --index {index} is out of range (the file has {len(ds)} records)")
    rec = ds.records[index]
    tok = load_tokenizer(model)
    if ds.type == "text":
        ex = render_text(tok, rec.data["text"])
    else:
        ex = render_chat(tok, to_messages(rec.data, ds.type, system_prompt), loss_on)
    head = f"{rec.file}:{rec.line} ({ds.type}; {ex.n_trained} of {len(ex.input_ids)} tokens trained, marked [[like this]])"
    return head + "\n" + preview(tok, ex)


def generate(model: str, prompts: list[str], *, system: str | None = None, max_new_tokens: int = 128,
             temperature: float = 0.0, batch_size: int = 16, precision: str = "fp32") -> list:
    """Answers to prompts, as the run answers (its system prompt or recipe). For a
    classification-head run: {label, probability, probabilities} per prompt."""
    from tunesmith.answering import Answerer
    from tunesmith.generation import GenerationSettings

    answerer = Answerer.load(model, precision=precision)
    if answerer.how.is_head:
        return answerer.classify(prompts, batch_size=batch_size)
    settings = GenerationSettings(max_new_tokens=max_new_tokens, temperature=temperature)
    return answerer.answer(prompts, settings, system=system, batch_size=batch_size)


def serve(models: list[str], *, host: str = "127.0.0.1", port: int = 8000, api_key_env: str | None = None,
          names: list[str] | None = None, max_batch: int = 32, max_queue: int = 256, precision: str = "fp32") -> None:
    """Serve runs and models over an OpenAI-compatible HTTP API until SIGINT/SIGTERM (see
    docs/serving.md). Each is a model name (its directory's name, or the matching entry of
    `names`); requests are answered as the run answers in evaluation. With `api_key_env`,
    requests need `Authorization: Bearer $<api_key_env>`."""
    import os

    from tunesmith.serve import build, run

    api_key = None
    if api_key_env:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise TunesmithError(f"--api-key-env {api_key_env}: the environment variable is unset or empty; "
                                 f"export {api_key_env}=<key> first")
    engine = build(list(models), names, max_batch=max_batch, max_queue=max_queue, precision=precision)
    print(f"serving {', '.join(engine.models)} on http://{host}:{port}/v1" + (" (API key required)" if api_key else ""), flush=True)
    run(engine, host=host, port=port, api_key=api_key)


def list_models() -> list[dict]:
    from tunesmith.models.builtins import describe_builtins

    return describe_builtins()


def tune(config: str | Path | object, overrides=(), *, trials: int, space: str | Path | object | None = None,
         metric: str | None = None, timeout_min: float | None = None, resume: bool = False, overwrite: bool = False,
         progress: bool = True) -> dict:
    """Search a training config's hyperparameters with Optuna (TPE, median pruning): `trials`
    trials, each an ordinary run under runs/<name>-tune/trials/, selected on the validation split.
    Writes best.yaml, trials.csv/.md, importances.json and tune.html there; returns summary.json's
    content with "paths". A killed search continues with resume=True (no finished trial repeats)."""
    from tunesmith.config import TrainConfig, load_train_config
    from tunesmith.rundir import run_lock
    from tunesmith.tune.outputs import tune_paths, write_outputs
    from tunesmith.tune.search import prepare_search, run_search, tune_dir
    from tunesmith.tune.space import SearchSpace, load_space, metric_for, resolve_space

    cfg = config if isinstance(config, TrainConfig) else load_train_config(config, overrides)
    spc = space if isinstance(space, SearchSpace) else load_space(space)
    metric_for(cfg.regimen, metric), resolve_space(cfg, spc)  # a wrong metric or space fails before anything is written
    root = tune_dir(cfg)
    with run_lock(root):
        s = prepare_search(cfg, spc, trials=trials, metric=metric, root=root, resume=resume, overwrite=overwrite)
        study = run_search(s, timeout_min=timeout_min, progress=progress)
        summary = write_outputs(s, study)
    return {**summary, "paths": tune_paths(root)}


def evaluate(model: str, config: str | Path | None = None, overrides=(), *, progress: bool = True, force: bool = False, **settings) -> dict:
    """Evaluate a model or run. Settings come from a YAML config, `key=value` overrides and/or
    keyword arguments (data=..., task=..., shots=...); returns the result written to
    <run>/eval/<dataset>.json."""
    from tunesmith.eval.config import load_eval_config
    from tunesmith.eval.runner import evaluate as run_eval

    cfg = load_eval_config(config, list(overrides), base={k: v for k, v in settings.items() if v is not None})
    return run_eval(model, cfg, progress=progress, force=force)


def compare(a: str, b: str, *, dataset: str | None = None) -> dict:
    """Paired comparison of two evaluations of the same items (B - A)."""
    from tunesmith.eval.compare import compare as _compare

    return _compare(a, b, dataset=dataset)


def export(run: str | Path, *, format: str, quant: str | None = None, out: str | Path | None = None,
           overwrite: bool = False) -> dict:
    """Export a finished run as `hf` (merged Hugging Face directory), `gguf` or `ollama`
    (GGUF + Modelfile), with a model card; see tunesmith.export and docs/export.md."""
    from tunesmith.export import export as _export

    return _export(run, format=format, quant=quant, out=out, overwrite=overwrite)
