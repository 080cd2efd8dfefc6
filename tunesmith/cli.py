"""The `tunesmith` command: a thin layer over `tunesmith.api`.

User errors (bad config, bad data, missing model) print one line and exit non-zero, with no
traceback; set TUNESMITH_DEBUG=1 to see the traceback anyway.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

from tunesmith.configlib import SEED_MAX
from tunesmith.errors import TunesmithError
from tunesmith.quiet import quiet_libraries as _quiet_libraries


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's error style: one line on stderr, no usage block."""

    def error(self, message: str):
        print(f"error: {self.prog}: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(2)


def _number(kind: type, low: float, high: float):
    """An argparse type: a finite `kind` within [low, high], else a one-line error."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or not low <= value <= high:
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {what} from {low:g} to {high:g}, got {text!r}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


COUNT = _number(int, 1, 1_000_000_000)
TOKENS = _number(int, 1, 131072)
TEMPERATURE = _number(float, 0.0, 100.0)
PRECISION_HELP = ("weights' precision, as for evaluation (eval.precision): fp32 (default), bf16, or auto (bf16 where the CPU "
                  "or GPU multiplies bf16 natively); give the precision the run was evaluated with to answer as measured")


def _fields_arg(items: list[str]) -> dict[str, str] | None:
    """`--field STD=NAME` items as a mapping; a malformed one is a one-line error."""
    out = {}
    for item in items:
        std, sep, name = item.partition("=")
        if not sep or not std.strip() or not name.strip():
            raise TunesmithError(f"--field {item}: expected STD=NAME, e.g. --field answer=final_decision")
        out[std.strip()] = name.strip()
    return out or None


def _train_args(a) -> list[str]:
    """The train command's arguments as given, without --nproc (what each torchrun rank runs)."""
    out = [a.config]
    for item in a.set or []:
        out += ["--set", item]
    return out + [f for f, on in (("--resume", a.resume), ("--overwrite", a.overwrite), ("--quiet", a.quiet)) if on]


def _launch_train(a) -> int:
    """--nproc N: validate the config here (one error, not N), then run the command under torchrun."""
    from tunesmith.config import load_train_config
    from tunesmith.launch import launch

    if os.environ.get("WORLD_SIZE"):
        raise TunesmithError(f"--nproc: this process already runs under torchrun (WORLD_SIZE={os.environ['WORLD_SIZE']}); drop --nproc")
    cfg = load_train_config(a.config, a.set or [])
    from tunesmith.training.distributed import check_supported

    check_supported(cfg.regimen, cfg.training.distributed)
    if a.resume and (cfg.run_dir / "checkpoints").is_dir():  # another world size: say so before starting N processes
        from tunesmith.training.checkpoint import check_resumable

        check_resumable(cfg.run_dir / "checkpoints", {"world_size": a.nproc, "distributed": cfg.training.distributed})
    import shlex

    again = _train_args(a)
    again = [x for x in again if x not in ("--resume", "--overwrite")]
    hints = (f"tunesmith train {shlex.join(again + ['--resume', '--nproc', str(a.nproc)])}",
             f"tunesmith train {shlex.join(again + ['--nproc', str(a.nproc)])}")
    return launch(a.nproc, _train_args(a), hints=hints, resumable=lambda: (cfg.run_dir / "checkpoints" / "state.json").exists())


def cmd_train(a) -> int:
    from tunesmith import api

    if a.nproc and a.nproc > 1:
        return _launch_train(a)
    r = api.train(a.config, a.set or [], resume=a.resume, overwrite=a.overwrite, progress=not a.quiet)
    from tunesmith.training.distributed import is_main

    if not is_main():  # under torchrun, rank 0 reports for all
        return 0
    print(f"run: {r['run_dir']}  steps: {r['steps']}  final loss: {r['final_loss']:.4f}"
          + (f"  best validation loss: {r['best_val_loss']:.4f} (step {r['best_step']})" if r.get("best_val_loss") is not None else "")
          + f"  {r['tokens_per_s']:.0f} tok/s  {r['wall_seconds']:.0f} s")
    enc = r.get("encoding") or {}
    if enc.get("truncated") or enc.get("dropped"):  # changed data is said, never silent
        print(f"note: {enc.get('truncated', 0)} of {enc.get('n', 0)} training examples were longer than data.max_length "
              f"and cut ({enc.get('prompt_cut', 0)} at the start of the prompt, to keep the answer)"
              + (f"; {enc['dropped']} had nothing left to train and were dropped" if enc.get("dropped") else ""))
    return 0


def cmd_models(a) -> int:
    from tunesmith import api

    rows = api.list_models()
    cols = ["name", "params", "architecture", "kind", "license", "installed", "converted"]
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in cols))
    return 0


def cmd_config(a) -> int:
    from tunesmith.configlib import describe
    from tunesmith.study.keys import SECTIONS

    for i, name in enumerate(SECTIONS if a.section == "all" else [a.section]):
        cls, prefix, head = SECTIONS[name]()
        print(("\n" if i else "") + f"# {head}\n" + describe(cls, prefix))
    return 0


def cmd_data_check(a) -> int:
    from tunesmith import api

    report = api.check_data(a.file, type=a.type, model=a.model, eval_path=a.eval, max_length=a.max_length)
    if a.json:
        import json

        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        print(report.format())
    return 0 if report.ok else 1


def _rewards_arg(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        name, _, weight = item.partition("=")
        try:
            out[name.strip()] = float(weight) if weight else 1.0
        except ValueError:
            out[name.strip()] = math.nan
        if not math.isfinite(out[name.strip()]) or not name.strip():
            raise TunesmithError(f"--reward {item}: expected NAME[=WEIGHT] with a finite weight, e.g. --reward exact_match=1.0")
    return out


def cmd_data_pairs(a) -> int:
    import json

    from tunesmith import api

    options = None
    if a.reward_options:
        try:
            options = json.loads(a.reward_options)
        except RecursionError:
            raise TunesmithError("--reward-options: JSON nested too deeply") from None
        except ValueError as e:
            raise TunesmithError(f"--reward-options: not valid JSON ({e}); e.g. '{{\"length_penalty\": {{\"max_words\": 30}}}}'") from None
    r = api.build_pairs(a.model, a.file, a.out, _rewards_arg(a.reward or ["exact_match"]), reward_options=options,
                        n_samples=a.samples, max_new_tokens=a.max_new_tokens, temperature=a.temperature, system=a.system,
                        min_gap=a.min_gap, limit=a.limit, seed=a.seed, progress=not a.quiet)
    gap = f", mean reward gap {r['mean_gap']:.3f}" if r["mean_gap"] is not None else ""
    print(f"{r['path']}: {r['pairs']} pairs from {r['prompts']} prompts ({r['no_preference']} without a preference{gap})")
    return 0 if r["pairs"] else 1


def cmd_data_preview(a) -> int:
    from tunesmith import api

    print(api.preview_data(a.file, type=a.type, model=a.model, index=a.index, system_prompt=a.system, loss_on=a.loss_on))
    return 0


def cmd_generate(a) -> int:
    from tunesmith import api

    for out in api.generate(a.model, a.prompt, system=a.system, max_new_tokens=a.max_new_tokens, temperature=a.temperature,
                            precision=a.precision):
        if isinstance(out, dict):  # a classification-head run: the label and its probability
            print(f"{out['label']}\t{out['probability']:.4f}")
        else:
            print(out)
    return 0


def cmd_export(a) -> int:
    from tunesmith import api

    res = api.export(a.run, format=a.format, quant=a.quant, out=a.out, overwrite=a.overwrite)
    what = res.get("file_type") or res.get("dtype")
    print(f"exported {a.run} as {res['format']} ({what}) to {res['out']}")
    for f in res["files"]:
        print(f"  {f['path']}\t{f['bytes'] / 2**20:.1f} MiB")
    if res.get("gguf"):
        types = ", ".join(f"{k} x{v}" for k, v in sorted(res.get("tensor_types", {}).items()))
        print(f"{res['gguf']}: {res['size_bytes'] / 2**20:.1f} MiB, file type {res['file_type']} (tensors: {types})")
    return 0


def cmd_chat(a) -> int:
    from tunesmith.answering import Answerer
    from tunesmith.generation import GenerationSettings

    answerer = Answerer.load(a.model, precision=a.precision)
    answerer._causal()
    # The run's recipe or system prompt is applied by Answering.chat on every turn; a --system
    # given here replaces the run's, as for eval and generate.
    history = [{"role": "system", "content": a.system}] if a.system is not None else []
    settings = GenerationSettings(max_new_tokens=a.max_new_tokens, temperature=a.temperature)
    print("chat with", a.model, "(empty line or Ctrl-D ends; /reset clears the history)")
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            print()
            return 0
        if not line:
            return 0
        if line == "/reset":
            history = history[:1] if a.system is not None else []
            continue
        history.append({"role": "user", "content": line})
        print("bot> ", end="", flush=True)
        reply = ""
        for piece in answerer.stream(history, settings):
            reply += piece
            print(piece, end="", flush=True)
        print()
        history.append({"role": "assistant", "content": reply.strip()})


def cmd_eval(a) -> int:
    from tunesmith import api
    from tunesmith.eval.report import format_result

    settings = {"data": a.data, "task": a.task, "prompt": a.prompt, "shots": a.shots, "limit": a.limit, "system": a.system,
                "fields": _fields_arg(a.field or []),
                "judge": {"base_url": a.judge, "model": a.judge_model} if a.judge else None}
    r = api.evaluate(a.model, a.config, a.set or [], progress=not a.quiet, force=a.force, **settings)
    print(format_result(r))
    return 0


def cmd_compare(a) -> int:
    from tunesmith import api
    from tunesmith.eval.compare import format_comparison

    print(format_comparison(api.compare(a.a, a.b, dataset=a.dataset)))
    return 0


def cmd_tune(a) -> int:
    from tunesmith import api

    out = api.tune(a.config, a.set or [], trials=a.trials, space=a.space, metric=a.metric, timeout_min=a.timeout,
                   resume=a.resume, overwrite=a.overwrite, progress=not a.quiet)
    best = out.get("best")
    if best:
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best["params"].items())
        print(f"best: trial {best['trial']}, {out['metric']} {best['value']:.4g} ({params})")
    else:
        print("no trial completed; see trials.md for what happened")
    print(f"trials: {out['finished']} of {out['trials']} finished {out['states']}")
    print("outputs:", ", ".join(out["paths"].values()))
    return 0


def cmd_study(a) -> int:
    from tunesmith.study.config import load_study_config
    from tunesmith.study.runner import run_study

    from tunesmith.study.fanout import FanOut

    fan = FanOut(workers=a.workers or FanOut.workers, ray=a.ray, ray_cpus=a.ray_cpus or FanOut.ray_cpus)
    fan.validate()  # a wrong flag fails before the study's data is read
    out = run_study(load_study_config(a.config, a.set or []), dry_run=a.dry_run, progress=not a.quiet, fanout=fan)
    _print_study(out)
    return 0


def _print_study(out: dict) -> None:
    if "text" in out:
        print("plan (rough CPU estimates):\n" + out["text"])
        return
    from tunesmith.study.verdict import verdict

    v = verdict(out["results"])
    for c in v["criteria"].values():
        print(c["text"])
    print(v["fine_tuning_vs_prompting"])
    for w in v["warnings"]:
        print("warning:", w)
    print("report:", ", ".join(out["paths"].values()))


def cmd_demo(a) -> int:
    from tunesmith.demo.study import run_demo

    _print_study(run_demo(a.out, dry_run=a.dry_run))
    return 0


def cmd_quickstart(a) -> int:
    from tunesmith.demo.quickstart import quickstart

    quickstart(out_dir=a.out, epochs=a.epochs)
    return 0


def cmd_serve(a) -> int:
    from tunesmith import api

    api.serve(a.model, host=a.host, port=a.port, api_key_env=a.api_key_env, names=a.name or None,
              max_batch=a.max_batch, max_queue=a.max_queue, precision=a.precision)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from tunesmith import __version__

    p = _Parser(prog="tunesmith", description="Fine-tune language models on your domain data and prove which adaptation wins.")
    p.add_argument("--version", action="version", version=f"tunesmith {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train a model from a YAML config")
    t.add_argument("config", help="YAML config (see `tunesmith config` for every option)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field, e.g. --set training.learning_rate=1e-4 (repeatable)")
    t.add_argument("--resume", action="store_true", help="continue the run from its latest checkpoint")
    t.add_argument("--overwrite", action="store_true", help="delete an existing run of the same name and start over")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--nproc", type=_number(int, 1, 4096), metavar="N",
                   help="train on N processes of this machine (N GPUs, or CPU processes) with torchrun; the same as "
                        "`torchrun --nproc-per-node N -m tunesmith train CONFIG` (see training.distributed)")
    t.set_defaults(fn=cmd_train)

    sub.add_parser("models", help="list the built-in models").set_defaults(fn=cmd_models)
    cf = sub.add_parser("config", help="list every config option with its default and meaning: train (default), study, eval or all")
    cf.add_argument("section", nargs="?", default="train", choices=["train", "study", "eval", "all"],
                    help="train: training configs; study: STUDY.yaml (its eval: section included); eval: `tunesmith eval --config`")
    cf.set_defaults(fn=cmd_config)

    d = sub.add_parser("data", help="check or preview a dataset").add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    c = d.add_parser("check", help="validate a dataset and describe it (exit 1 on errors)")
    c.add_argument("file")
    c.add_argument("--type", help="force the dataset type instead of detecting it")
    c.add_argument("--model", help="count tokens with this model's tokenizer and chat template")
    c.add_argument("--eval", help="an evaluation file: checked too, and its overlap with FILE reported")
    c.add_argument("--max-length", type=TOKENS, default=512, help="report examples longer than this many tokens (default 512)")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c.set_defaults(fn=cmd_data_check)
    pp = d.add_parser("pairs", help="build preference pairs: sample answers per prompt, keep the best and worst by reward")
    pp.add_argument("file", help="prompts (prompt_only or prompt_completion records; columns go to the rewards)")
    pp.add_argument("--model", default="smollm2-135m-instruct", help="model or run to sample from")
    pp.add_argument("--out", required=True, help="preference JSONL to write (prompt, chosen, rejected, rewards)")
    pp.add_argument("--reward", action="append", metavar="NAME[=WEIGHT]",
                    help="reward function (built-in or module:function) and weight; repeatable (default exact_match)")
    pp.add_argument("--reward-options", metavar="JSON", help="keyword arguments per reward, e.g. '{\"length_penalty\": {\"max_words\": 30}}'")
    pp.add_argument("--samples", type=_number(int, 1, 1024), default=4, help="answers sampled per prompt (default 4)")
    pp.add_argument("--max-new-tokens", type=TOKENS, default=64)
    pp.add_argument("--temperature", type=TEMPERATURE, default=1.0)
    pp.add_argument("--system", help="system prompt to sample with (default: the run's own)")
    pp.add_argument("--min-gap", type=_number(float, -1e6, 1e6), default=0.0, help="keep a pair only when best - worst reward exceeds this")
    pp.add_argument("--limit", type=COUNT, help="only the first N prompts")
    pp.add_argument("--seed", type=_number(int, 0, SEED_MAX), default=0)
    pp.add_argument("--quiet", action="store_true")
    pp.set_defaults(fn=cmd_data_pairs)
    v = d.add_parser("preview", help="print one rendered example with the trained tokens marked [[like this]]")
    v.add_argument("file")
    v.add_argument("--type")
    v.add_argument("--model", default="smollm2-135m-instruct")
    v.add_argument("--index", type=_number(int, 0, 1_000_000_000), default=0, help="which record (0-based)")
    v.add_argument("--system", help="system prompt to add (as data.system_prompt would)")
    v.add_argument("--loss-on", default="assistant", choices=["assistant", "last", "all"])
    v.set_defaults(fn=cmd_data_preview)

    g = sub.add_parser("generate", help="answer prompts with a model or a trained run")
    g.add_argument("model", help="run directory, built-in name, HF directory or .gguf file")
    g.add_argument("--prompt", action="append", required=True, help="a prompt (repeatable; answered as one batch)")
    g.add_argument("--system", help="system prompt (default: the one the run was trained with)")
    g.add_argument("--max-new-tokens", type=TOKENS, default=128)
    g.add_argument("--temperature", type=TEMPERATURE, default=0.0, help="0 = greedy")
    g.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="fp32", help=PRECISION_HELP)
    g.set_defaults(fn=cmd_generate)

    x = sub.add_parser("export", help="export a run as a Hugging Face directory, a GGUF file or an Ollama Modelfile + GGUF")
    x.add_argument("run", help="run directory (runs/<name>)")
    x.add_argument("--format", required=True, choices=["hf", "gguf", "ollama"])
    x.add_argument("--quant", help="hf: f32 (default), f16, bf16; gguf/ollama: f16 (default), bf16, q8_0, f32")
    x.add_argument("--out", help="target folder (default: <run>/export/<format>[-<quant>])")
    x.add_argument("--overwrite", action="store_true", help="replace an existing target folder")
    x.set_defaults(fn=cmd_export)

    ch = sub.add_parser("chat", help="interactive chat with streaming replies")
    ch.add_argument("model")
    ch.add_argument("--system")
    ch.add_argument("--max-new-tokens", type=TOKENS, default=256)
    ch.add_argument("--temperature", type=TEMPERATURE, default=0.0)
    ch.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="fp32", help=PRECISION_HELP)
    ch.set_defaults(fn=cmd_chat)

    e = sub.add_parser("eval", help="evaluate a model or run on a dataset (`tunesmith eval compare A B` compares two)")
    e.add_argument("model", help="run directory, built-in name, HF directory or .gguf file")
    e.add_argument("--data", help="evaluation data file")
    e.add_argument("--task", help="qa, classification, summarization, translation, code, math, chat or creative")
    e.add_argument("--config", help="YAML with evaluation settings (see examples/eval/)")
    e.add_argument("--prompt", help="prompt template over the record's fields, e.g. 'Q: {question}'")
    e.add_argument("--shots", type=_number(int, 0, 1000), help="few-shot examples per question")
    e.add_argument("--system", help="system prompt (default: the run's)")
    e.add_argument("--limit", type=COUNT, help="evaluate only the first N items")
    e.add_argument("--field", action="append", metavar="STD=NAME", help="map a standard field to the file's, e.g. --field answer=final_decision")
    e.add_argument("--judge", metavar="BASE_URL", help="OpenAI-compatible endpoint for LLM-as-judge helpfulness")
    e.add_argument("--judge-model", default="judge", help="model name at the judge endpoint")
    e.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any evaluation setting")
    e.add_argument("--force", action="store_true", help="re-run even when a cached result matches")
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(fn=cmd_eval)

    tu = sub.add_parser("tune", help="search a config's hyperparameters (Optuna TPE + median pruning) on its validation split")
    tu.add_argument("config", help="TRAIN.yaml: the config whose hyperparameters are searched")
    tu.add_argument("--trials", type=_number(int, 1, 100000), required=True, help="trials to finish (pruned and failed ones count)")
    tu.add_argument("--space", help="SPACE.yaml: options and ranges to search (default: the regimen's space, see docs/tuning.md)")
    tu.add_argument("--metric", help="validation metric to optimise (default per regimen: val_loss, val_accuracy, val_reward, val_score)")
    tu.add_argument("--timeout", type=_number(float, 0.01, 1e7), metavar="MIN", help="start no new trial after MIN minutes")
    tu.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting of the config")
    tu.add_argument("--resume", action="store_true", help="continue a search that was interrupted")
    tu.add_argument("--overwrite", action="store_true", help="delete the previous search and start over")
    tu.add_argument("--quiet", action="store_true", help="no progress bar")
    tu.set_defaults(fn=cmd_tune)

    st = sub.add_parser("study", help="run a comparative study: every arm, one report with a verdict")
    st.add_argument("config", help="STUDY.yaml (see examples/study-*.yaml, examples/studies/ and `tunesmith config study`)")
    st.add_argument("--dry-run", action="store_true", help="print the plan (arms, estimated tokens and minutes) and stop")
    st.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a study setting")
    st.add_argument("--quiet", action="store_true", help="no per-step progress bars")
    st.add_argument("--workers", type=_number(int, 1, 1024), metavar="N",
                    help="run up to N ready arms at once (arms whose after:/on: arms are done), each in a worker process "
                         "on this machine with cores/N torch threads; same results, cache and report as the default "
                         "(1: one arm after another, with per-step progress bars)")
    st.add_argument("--ray", metavar="ADDRESS", help="run ready arms as tasks on a running Ray cluster, e.g. --ray 10.0.0.1:6379 "
                    "(the address `ray start --head` prints; needs pip install 'tunesmith[ray]'); start the study from "
                    "a folder on storage every node mounts at the same path, output_dir included")
    st.add_argument("--ray-cpus", type=_number(int, 1, 4096), metavar="N",
                    help="with --ray: CPUs each arm reserves on the cluster, and the torch threads it uses (default 1)")
    st.set_defaults(fn=cmd_study)

    dm = sub.add_parser("demo", help="the bundled demo study on the built-in default model (~15 min on 2 CPU cores)")
    dm.add_argument("--out", default="studies")
    dm.add_argument("--dry-run", action="store_true")
    dm.set_defaults(fn=cmd_demo)

    q = sub.add_parser("quickstart", help="5-minute version: LoRA fine-tune the default model on the demo domain, exact match before and after")
    q.add_argument("--out", default="runs", help="folder for the demo data and run")
    q.add_argument("--epochs", type=_number(float, 0.01, 100000.0), default=None, help="override the demo's number of epochs")
    q.set_defaults(fn=cmd_quickstart)

    sv = sub.add_parser("serve", help="serve runs and models over an OpenAI-compatible HTTP API (see docs/serving.md)")
    sv.add_argument("model", nargs="+", help="run directories or models; each is served under its directory's name")
    sv.add_argument("--name", action="append", metavar="NAME", help="model name for the i-th model instead of its directory's (repeatable, in order)")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    sv.add_argument("--port", type=_number(int, 0, 65535), default=8000)
    sv.add_argument("--api-key-env", metavar="VAR", help="require 'Authorization: Bearer $VAR' on every /v1 request")
    sv.add_argument("--max-batch", type=_number(int, 1, 1024), default=32, help="most prompts generated together (default 32)")
    sv.add_argument("--max-queue", type=_number(int, 1, 100000), default=256, help="waiting requests beyond which the server answers 503 (default 256)")
    sv.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="fp32", help=PRECISION_HELP)
    sv.set_defaults(fn=cmd_serve)
    return p


def _compare_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="tunesmith eval compare", description="paired comparison of two evaluations (B - A)")
    p.add_argument("a", help="run directory or eval result file")
    p.add_argument("b", help="run directory or eval result file")
    p.add_argument("--dataset", help="dataset name when a run has several evaluations")
    p.set_defaults(fn=cmd_compare)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # `eval compare A B` shares its first word with `eval MODEL`: route it explicitly.
    if argv[:2] == ["eval", "compare"]:
        args = _compare_parser().parse_args(argv[2:])
    else:
        args = build_parser().parse_args(argv)
    _quiet_libraries()
    try:
        return args.fn(args)
    except TunesmithError as e:
        if os.environ.get("TUNESMITH_DEBUG"):
            raise
        # One line even when a quoted user value (a key, a cell) holds a line break.
        print("error: " + str(e).replace("\r", "\\r").replace("\n", "\\n"), file=sys.stderr)
        return e.exit_code
    except Exception as e:  # only a full disk is handled here; anything else is re-raised
        # A full disk can strike any write (metrics, exports); say so in one line, not a traceback.
        from tunesmith.rundir import disk_full

        name = getattr(e, "filename", None)
        err = disk_full(e, (os.path.dirname(name) if isinstance(name, str) else "") or ".")
        if err is None or os.environ.get("TUNESMITH_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        if getattr(args, "command", None) in ("study", "demo"):  # a study continues by itself, without --resume
            print("\ninterrupted; finished arms are kept: run the same command again to continue", file=sys.stderr)
        else:
            n = getattr(args, "nproc", None) or int(os.environ.get("WORLD_SIZE", "1") or 1)
            print("\ninterrupted; a training run continues with `tunesmith train CONFIG --resume"
                  + (f" --nproc {n}`" if n > 1 else "`"), file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
