"""tunesmith's SFT step against TRL's SFTTrainer, side by side in one run: tokens/s, peak memory,
loss after the same batches, and MFU against the matmul peak measured in the same run.

    python benchmarks/vs_trl.py                  # ~15 min on 2 CPU cores; writes docs/benchmarks.md
    python benchmarks/vs_trl.py --quick          # tiny random model, seconds: checks the plumbing
    python benchmarks/vs_trl.py --only trl-lora-bf16,tunesmith-lora --steps 3 --rounds 2
    python benchmarks/vs_trl.py --levers         # tunesmith's options, each on and off

This script installs nothing. TRL runs when it is importable here or when `.venv-trl/` exists
beside the project; make that separate environment with the one command

    python -m venv .venv-trl && .venv-trl/bin/pip install torch==2.13.0 && .venv-trl/bin/pip install -e . trl==1.16.0 torch==2.13.0

(TRL 1.16.0 runs on torch 2.13.0: pinning torch twice stops pip from pulling another one.)
Without TRL the TRL rows are skipped and only tunesmith's are measured.

Fairness, all by construction:
- Identical token ids: the examples are encoded once, here, by tunesmith's chat templating, and
  both contenders get the same input ids and the same trained-token mask (TRL: a pre-tokenized
  dataset with a `labels` column, -100 outside the answers).
- The same batches in the same order: step k trains examples [k*B, (k+1)*B) for both. TRL pads
  them to the longest (its default; its packing needs FlashAttention, which CPUs lack), tunesmith
  packs them into rows of --max-length with per-document masks. TRL's sampler is made sequential.
- The same hyperparameters: AdamW, constant learning rate, no warm-up, no weight decay, gradient
  clipping at 1.0, LoRA r=16 alpha=32 on all linear layers with dropout 0 (so that the losses can
  agree), initialised from the same seed.
- Tokens/s: the non-pad input tokens of the examples (prompt and answer; the same number for
  both) of steps 2..N divided by the wall time from the end of step 1 to the end of step N
  (data collation, logging and the optimizer included; step 1 warms up).
- Peak memory: each contender runs in its own process; the figure is that process's resident
  high-water mark from just after the model is loaded to the end of its steps (weights included).
- MFU: model FLOPs of the useful tokens (6 x matmul parameters + 6 x layers x hidden x mean
  example length, per token) x tokens/s / the measured matmul peak of the contender's precision.
- Rounds alternate (every contender once per round, in the same order): CPU contention from
  other jobs spreads over all contenders; the table reports each contender's best round.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

DEFAULT_OUT = ROOT / "docs" / "benchmarks.md"
TRL_VENV_PYTHON = ROOT / ".venv-trl" / "bin" / "python"
LOSS_TOLERANCE = 0.02  # relative difference of the mean loss over the same steps

# name: (who, adapter, precision, options). TRL options: gc = gradient checkpointing.
# tunesmith options are TrainingConfig fields (and "packing"); unset ones take tunesmith's defaults.
CONTENDERS = {
    "trl-lora-bf16": ("trl", "lora", "bf16", {"gc": False}),
    "trl-lora-bf16-gc": ("trl", "lora", "bf16", {"gc": True}),
    "trl-lora-fp32": ("trl", "lora", "fp32", {"gc": False}),
    "trl-full-bf16": ("trl", "full", "bf16", {"gc": False}),
    "trl-full-bf16-gc": ("trl", "full", "bf16", {"gc": True}),
    "trl-full-fp32": ("trl", "full", "fp32", {"gc": False}),
    "tunesmith-lora": ("tunesmith", "lora", "bf16", {}),
    "tunesmith-full": ("tunesmith", "full", "bf16", {}),
}
# Each of tunesmith's levers switched against its default (run with --levers).
LEVERS = {
    "tunesmith-lora-fp32base": ("tunesmith", "lora", "bf16", {"base_dtype": "fp32"}),
    "tunesmith-lora-gc": ("tunesmith", "lora", "bf16", {"gradient_checkpointing": True}),
    "tunesmith-lora-unfused": ("tunesmith", "lora", "bf16", {"fused_optimizer": False}),
    "tunesmith-lora-padded": ("tunesmith", "lora", "bf16", {"packing": False}),
    "tunesmith-full-gc": ("tunesmith", "full", "bf16", {"gradient_checkpointing": True}),
    "tunesmith-full-unfused": ("tunesmith", "full", "bf16", {"fused_optimizer": False}),
    "tunesmith-full-compile": ("tunesmith", "full", "bf16", {"compile": True}),
    "tunesmith-lora-fp32": ("tunesmith", "lora", "fp32", {}),
    "tunesmith-full-fp32": ("tunesmith", "full", "fp32", {}),
}
ALL = {**CONTENDERS, **LEVERS}


# ------------------------------------------------------------------ worker side (one contender per process)

def _rss_reset() -> None:
    """Start a new resident high-water window (Linux): the peak is then this phase's own."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def _rss_peak_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _lora_config():
    from peft import LoraConfig

    return LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")


def _flops_per_token(model, mean_len: float) -> float:
    cfg = model.config
    emb = model.get_input_embeddings().weight.numel()
    n = sum(p.numel() for p in model.parameters()) - emb
    if getattr(cfg, "tie_word_embeddings", False):
        n += emb
    return 6 * n + 6 * cfg.num_hidden_layers * cfg.hidden_size * mean_len


def _examples(spec: dict):
    from tunesmith.data.templating import Example

    return [Example(input_ids=e["input_ids"], labels=e["labels"]) for e in spec["examples"]]


def _run_tunesmith(spec: dict, adapter: str, precision: str, options: dict) -> dict:
    import torch

    from tunesmith.config import AdapterConfig, TrainingConfig
    from tunesmith.data.packing import collate, pack, unpacked
    from tunesmith.models.loading import load_model
    from tunesmith.training.adapters import apply_adapter, apply_training_options
    from tunesmith.training.batching import count_targets
    from tunesmith.training.losses import causal_lm_loss
    from tunesmith.training.optim import build_optimizer
    from tunesmith.training.runtime import autocast

    packing = options.pop("packing", True)
    tc = TrainingConfig(learning_rate=spec["lr"], scheduler="constant", warmup_ratio=0.0, weight_decay=0.0, max_grad_norm=1.0,
                        precision=precision, **options)
    model, _, _ = load_model(spec["model_dir"])
    fpt = _flops_per_token(model, spec["mean_len"])
    torch.manual_seed(spec["seed"])
    model = apply_adapter(model, AdapterConfig(mode=adapter, lora_dropout=0.0)).train()
    model = apply_training_options(model, tc, adapter, precision)
    params, opt, sched = build_optimizer(model, tc, total_steps=spec["steps"])
    ex, B, device = _examples(spec), spec["batch_examples"], torch.device("cpu")
    _rss_reset()
    losses, marks = [], []
    for k in range(spec["steps"]):
        group = ex[k * B:(k + 1) * B]
        rows = pack(group, spec["max_length"]) if packing else sorted(unpacked(group), key=len, reverse=True)
        n = count_targets(rows)
        batch = collate(rows, spec["pad_id"])
        with autocast(device, precision):
            s, _ = causal_lm_loss(model, batch)
        (s / n).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(s.item() / n)
        marks.append(time.perf_counter())
    return {"losses": losses, "marks": marks, "peak_mib": _rss_peak_mib(), "flops_per_token": fpt}


def _run_trl(spec: dict, adapter: str, precision: str, options: dict) -> dict:
    import torch
    from datasets import Dataset
    from peft import get_peft_model
    from torch.utils.data import SequentialSampler
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    tok = AutoTokenizer.from_pretrained(spec["model_dir"])
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype=torch.float32, attn_implementation="sdpa")
    fpt = _flops_per_token(model, spec["mean_len"])
    torch.manual_seed(spec["seed"])
    if adapter == "lora":
        model = get_peft_model(model, _lora_config())
    ds = Dataset.from_list([{"input_ids": e["input_ids"], "labels": [-100 if y == -100 else y for y in e["labels"]]}
                            for e in spec["examples"][: spec["steps"] * spec["batch_examples"]]])
    marks, losses = [], []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            marks.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    class InOrder(SFTTrainer):
        def _get_train_sampler(self, *a, **k):  # the same batches in the same order as tunesmith
            return SequentialSampler(self.train_dataset)

    args = SFTConfig(output_dir=tempfile.mkdtemp(prefix="vs-trl-"), per_device_train_batch_size=spec["batch_examples"],
                     max_steps=spec["steps"], learning_rate=spec["lr"], lr_scheduler_type="constant", warmup_steps=0,
                     weight_decay=0.0, max_grad_norm=1.0, bf16=precision == "bf16", fp16=False,
                     gradient_checkpointing=options["gc"], gradient_checkpointing_kwargs={"use_reentrant": False},
                     logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, seed=spec["seed"],
                     dataloader_num_workers=0, max_length=spec["max_length"], dataset_kwargs={"skip_prepare_dataset": True},
                     remove_unused_columns=False, disable_tqdm=True)
    trainer = InOrder(model=model, args=args, train_dataset=ds, processing_class=tok, callbacks=[Clock()])
    _rss_reset()
    trainer.train()
    return {"losses": losses, "marks": marks, "peak_mib": _rss_peak_mib(), "flops_per_token": fpt}


def worker(name: str, spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    import torch

    torch.set_num_threads(spec["threads"])
    who, adapter, precision, options = ALL[name]
    t = time.perf_counter()
    out = (_run_trl if who == "trl" else _run_tunesmith)(spec, adapter, precision, dict(options))
    out["wall_s"] = time.perf_counter() - t
    print("RESULT " + json.dumps(out), flush=True)
    return 0


# ------------------------------------------------------------------ parent side

def trl_python() -> str | None:
    """The interpreter that has TRL: this one, or the separate .venv-trl."""
    import importlib.util

    if importlib.util.find_spec("trl") is not None:
        return sys.executable
    return str(TRL_VENV_PYTHON) if TRL_VENV_PYTHON.exists() else None


def quick_model(tmp: Path, tok) -> Path:
    """A 2-block random llama with the default model's tokenizer (as the tests use)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(tmp / "quick-model")
    tok.save_pretrained(tmp / "quick-model")
    return tmp / "quick-model"


def prepare_spec(a, tmp: Path) -> dict:
    from train_speed import load_examples

    from tunesmith.models.builtins import DEFAULT_MODEL
    from tunesmith.models.loading import load_tokenizer, resolve_model

    spec_model = a.model or DEFAULT_MODEL
    tok = load_tokenizer(spec_model)
    model_dir = quick_model(tmp, tok) if a.quick else resolve_model(spec_model).weights_dir
    data, examples = load_examples(a.data, tok, a.max_length)
    need = a.steps * a.batch_examples
    if len(examples) < need:
        raise SystemExit(f"{data}: {len(examples)} examples, {need} needed for {a.steps} steps of {a.batch_examples}")
    ex = examples[:need]
    return {"model": "random 2-block llama (--quick)" if a.quick else spec_model, "model_dir": str(model_dir), "data": str(data),
            "examples": [{"input_ids": e.input_ids, "labels": e.labels} for e in ex], "pad_id": tok.pad_token_id,
            "steps": a.steps, "batch_examples": a.batch_examples, "max_length": a.max_length, "lr": a.lr, "seed": 0,
            "threads": a.threads, "mean_len": sum(len(e.input_ids) for e in ex) / len(ex),
            "step_tokens": [sum(len(e.input_ids) for e in ex[k * a.batch_examples:(k + 1) * a.batch_examples]) for k in range(a.steps)],
            "trained_tokens": sum(sum(1 for y in e.labels[1:] if y != -100) for e in ex)}


def run_contender(name: str, spec_path: Path, python: str, timeout: int) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "TOKENIZERS_PARALLELISM": "false"}
    p = subprocess.run([python, __file__, "--worker", name, str(spec_path)], capture_output=True, text=True, env=env, timeout=timeout)
    line = next((x for x in p.stdout.splitlines() if x.startswith("RESULT ")), None)
    if p.returncode != 0 or line is None:
        raise RuntimeError(f"{name} failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


def summarise(name: str, runs: list[dict], spec: dict, peaks: dict) -> dict:
    who, adapter, precision, options = ALL[name]
    rates = []
    for r in runs:
        m = r["marks"]
        rates.append(sum(spec["step_tokens"][1:len(m)]) / (m[-1] - m[0]))
    best = max(rates)
    return {"config": name, "who": who, "adapter": adapter, "precision": precision, "options": options,
            "tokens_per_s": round(best, 1), "tokens_per_s_rounds": [round(x, 1) for x in rates],
            "peak_memory_mib": round(min(r["peak_mib"] for r in runs)), "losses": runs[0]["losses"],
            "mfu": best * runs[0]["flops_per_token"] / peaks[precision]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", nargs=2, metavar=("NAME", "SPEC"), help=argparse.SUPPRESS)
    p.add_argument("--only", help=f"comma-separated subset of {','.join(ALL)}")
    p.add_argument("--levers", action="store_true", help="run tunesmith's lever rows (each option on and off) instead of the contest")
    p.add_argument("--quick", action="store_true", help="a tiny random model: checks the plumbing in seconds, figures mean nothing")
    p.add_argument("--model", help="model (default: the built-in default model)")
    p.add_argument("--data", help="SFT data (default: GSM8K worked solutions if prepared, else the demo QA pairs)")
    p.add_argument("--steps", type=int, default=4, help="optimizer steps per contender and round (the first one is not timed)")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds")
    p.add_argument("--batch-examples", type=int, default=8, help="examples per optimizer step")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 0)) or os.cpu_count())
    p.add_argument("--timeout", type=int, default=1800, help="seconds per contender process")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    a = p.parse_args(argv)
    if a.worker:
        return worker(*a.worker)
    if a.steps < 2 or a.rounds < 1:
        raise SystemExit("--steps must be >= 2 (the first step is not timed) and --rounds >= 1")
    from eval_shared import environment, only_names
    from train_speed import matmul_peak

    names = only_names(a.only, ALL, "contender(s)") if a.only else (["tunesmith-lora", "tunesmith-full", *LEVERS] if a.levers else list(CONTENDERS))
    trl_py = trl_python()
    if trl_py is None:
        skipped = [n for n in names if ALL[n][0] == "trl"]
        names = [n for n in names if ALL[n][0] != "trl"]
        print(f"TRL is not importable and {TRL_VENV_PYTHON} does not exist: skipping {', '.join(skipped) or 'nothing'}", flush=True)
    import torch

    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory(prefix="vs-trl-") as tmp:
        spec = prepare_spec(a, Path(tmp))
        spec_path = Path(tmp) / "spec.json"
        spec_path.write_text(json.dumps(spec))
        env = environment(spec["model"], None)
        runs: dict[str, list[dict]] = {n: [] for n in names}
        peaks = {"fp32": 0.0, "bf16": 0.0}
        for rnd in range(a.rounds):
            # The matmul peak is measured once per round, between contenders: the best of the rounds.
            peaks = {"fp32": max(peaks["fp32"], matmul_peak(torch.float32)), "bf16": max(peaks["bf16"], matmul_peak(torch.bfloat16))}
            for n in names:
                r = run_contender(n, spec_path, trl_py if ALL[n][0] == "trl" else sys.executable, a.timeout)
                runs[n].append(r)
                m = r["marks"]
                print(f"round {rnd + 1} {n:26s} {sum(spec['step_tokens'][1:len(m)]) / (m[-1] - m[0]):7.1f} tok/s  "
                      f"peak {r['peak_mib'] / 1024:5.2f} GiB  losses {' '.join(f'{x:.4f}' for x in r['losses'])}", flush=True)
    rows = [summarise(n, runs[n], spec, peaks) for n in names]
    from vs_trl_report import render

    info = {k: spec[k] for k in ("model", "steps", "batch_examples", "max_length", "lr", "mean_len", "trained_tokens", "threads")}
    info.update(data=spec["data"], examples=len(spec["examples"]), rounds=a.rounds, peaks=peaks, tolerance=LOSS_TOLERANCE,
                tokens=sum(spec["step_tokens"]))
    table = render(rows, env, info)
    print(table)
    if not a.quick or a.out != str(DEFAULT_OUT):  # --quick figures never overwrite the recorded ones
        from vs_trl_report import write

        write(Path(a.out), table, rows, levers=a.levers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
