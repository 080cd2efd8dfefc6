"""How training memory grows with model size, and what each memory lever buys: peak resident memory
and tokens/s of a few SFT steps for LoRA (frozen base in fp32 and in bf16), QLoRA (4-bit NF4 base),
full fine-tuning, each with and without activation checkpointing, on the default model
(SmolLM2-135M), gemma3-270m and a 1B-parameter model of the default model's architecture built
here with random weights. Written into docs/benchmarks.md between `<!-- memory-sizes:start -->`
and `<!-- memory-sizes:end -->`.

    python benchmarks/memory_sizes.py                  # everything, ~40 min on 2 idle cores
    python benchmarks/memory_sizes.py --only smollm2-135m-instruct --configs lora,qlora
    python benchmarks/memory_sizes.py --quick          # tiny random model: checks the plumbing

Every configuration trains in a process of its own (`tunesmith train` through the library API), so
each peak is that configuration's alone. Phases are measured with the resident high-water mark
(/proc/self/clear_refs, Linux): `load` is reading the weights and applying the adapter (a built-in
GGUF model is dequantized on the way), `training` the steps themselves (weights, optimizer state,
activations). Tokens/s: trained rows' tokens of steps 2..N over their time (the first step warms
up). The same packed rows of the demo domain's questions (256 tokens, 4 rows a step) in every run.
Full fine-tuning of the 1B model is not run by default: its fp32 weights, gradients and AdamW state
alone are 16 bytes a parameter (about 16 GiB), which with activations does not fit beside other
work on a 24 GiB machine (`--configs full` runs it anyway).
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

START, END, TAG = "<!-- memory-sizes:start -->", "<!-- memory-sizes:end -->", "memory-sizes:data"
TITLE = "## Larger models in the same memory: LoRA, bf16 base, QLoRA and checkpointing by model size"
MODELS = ("smollm2-135m-instruct", "gemma3-270m", "llama-1b-random")
CONFIGS = {
    "lora-fp32-base": ["adapter.mode=lora", "training.base_dtype=fp32"],
    "lora": ["adapter.mode=lora"],
    "lora+gc": ["adapter.mode=lora", "training.gradient_checkpointing=true"],
    "qlora": ["adapter.mode=qlora"],
    "qlora+gc": ["adapter.mode=qlora", "training.gradient_checkpointing=true"],
    "full": ["adapter.mode=full"],
    "full+gc": ["adapter.mode=full", "training.gradient_checkpointing=true"],
}
SKIP = {("llama-1b-random", "full"), ("llama-1b-random", "full+gc")}


def build_1b(out: Path, quick: bool) -> Path:
    """A llama of the default model's family scaled to ~1.07B parameters (hidden 2048, 16 blocks,
    MLP 8192, 32 heads / 8 KV heads, as Llama 3.2 1B; the default model's 49k vocabulary, tied
    embeddings), random weights, saved in bf16 with the default model's tokenizer."""
    if (out / "config.json").exists():
        return out
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tunesmith.models.builtins import DEFAULT_MODEL
    from tunesmith.models.loading import load_tokenizer

    tok = load_tokenizer(DEFAULT_MODEL)
    size = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2) if quick else \
        dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8)
    cfg = LlamaConfig(vocab_size=len(tok), max_position_embeddings=2048, tie_word_embeddings=True, rope_theta=100000.0,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **size)
    torch.manual_seed(0)
    with torch.device("cpu"):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    tmp = Path(tempfile.mkdtemp(prefix="1b.", dir=out.parent))
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    os.replace(tmp, out)
    return out


def child(spec: dict) -> dict:
    """One configuration, in this process: train, attributing the resident peak to phases."""
    from eval_shared import steady_tokens_per_s
    from memory_phases import Phases

    from tunesmith import api
    from tunesmith.regimens import sft

    ph = Phases()
    ph.wrap(sft, "load_trainable", "load", "training")
    ph.wrap(sft, "save_model", "export", "end")
    ph.mark("setup")
    res = api.train(None, spec["overrides"], overwrite=True, progress=False)
    ph.mark("end")
    steps = [json.loads(x) for x in (Path(res["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    steps = [s for s in steps if "tokens_per_s" in s]
    peaks = {r["phase"]: r["peak_mib"] for r in ph.rows}
    return {"load_mib": peaks.get("load"), "training_mib": peaks.get("training"), "tokens_per_s": steady_tokens_per_s(res["run_dir"]),
            "params": res["total_params"], "trainable": res["trainable_params"], "losses": [s["loss"] for s in steps],
            "precision": res["precision"]}


def run_one(label: str, model: str, config: str, work: Path, data: Path, steps: int) -> dict:
    name = f"{label}-{config}".replace("+", "-")
    overrides = [f"model.name={model}", f"data.train={data}", "data.val_fraction=0.0", "data.max_length=256",
                 "training.batch_size=4", f"training.max_steps={steps}", "training.learning_rate=1e-4",
                 f"training.save_every={steps}", f"training.eval_every={steps}", f"name={name}", f"output_dir={work / 'runs'}",
                 "seed=0", *CONFIGS[config]]
    spec = json.dumps({"overrides": overrides})
    t0 = time.time()
    p = subprocess.run([sys.executable, __file__, "--child", spec], capture_output=True, text=True, cwd=ROOT)
    if p.returncode != 0:
        tail = (p.stderr.strip().splitlines() or ["?"])[-1]
        print(f"  {label} {config}: failed ({tail})", file=sys.stderr)
        return {"model": label, "config": config, "error": tail[:200]}
    row = {"model": label, "config": config, **json.loads(p.stdout.strip().splitlines()[-1]), "wall_s": round(time.time() - t0, 1)}
    print(f"  {label} {config}: training peak {row['training_mib'] / 1024:.2f} GiB, {row['tokens_per_s']:.0f} tok/s", file=sys.stderr)
    return row


def render(rows: list[dict], host: str) -> str:
    out = [host, "", "| model | parameters | configuration | trained parameters | load peak | training peak | x `lora` | tokens/s | x `lora` |",
           "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        base = next((r for r in mine if r["config"] == "lora" and "error" not in r), None)  # the default: what each lever changes
        for r in mine:
            if "error" in r:
                out.append(f"| {model} | | `{r['config']}` | | | failed: {r['error']} | | | |")
                continue
            mem_x = f"x{r['training_mib'] / base['training_mib']:.2f}" if base else "-"
            tps_x = f"x{r['tokens_per_s'] / base['tokens_per_s']:.2f}" if base else "-"
            out.append(f"| {model} | {r['params'] / 1e6:,.0f}M | `{r['config']}` | {r['trainable'] / 1e6:,.2f}M | {r['load_mib'] / 1024:.2f} GiB | "
                       f"**{r['training_mib'] / 1024:.2f} GiB** | {mem_x} | {r['tokens_per_s']:.0f} | {tps_x} |")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true", help="a tiny random model in place of each: checks the plumbing")
    p.add_argument("--only", help=f"comma-separated models (default: {', '.join(MODELS)})")
    p.add_argument("--configs", help=f"comma-separated (default: all of {', '.join(CONFIGS)}; the 1B model skips full)")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--work", default=str(ROOT / "runs" / "bench-memory-sizes"))
    p.add_argument("--out", default=None, help="Markdown file to write (default docs/benchmarks.md; --quick: <work>/benchmarks.md)")
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(child(json.loads(a.child))))
        return 0
    from eval_shared import previous_rows, write_section

    from tunesmith.demo.domain import write_domain

    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    data = write_domain(work / "data")["qa_train"]
    models = a.only.split(",") if a.only else list(MODELS)
    configs = a.configs.split(",") if a.configs else list(CONFIGS)
    bad = [x for x in models if x not in MODELS] + [x for x in configs if x not in CONFIGS]
    if bad:
        p.error(f"unknown: {', '.join(bad)} (models: {', '.join(MODELS)}; configs: {', '.join(CONFIGS)})")
    rows = []
    for model in models:
        spec = str(build_1b(work / ("tiny-model" if a.quick else "llama-1b-random"), a.quick)) if model == "llama-1b-random" or a.quick else model
        for config in configs:
            if (model, config) in SKIP and not a.configs:
                continue
            rows.append(run_one(model, spec, config, work, data, a.steps))
    import platform

    import torch

    host = (f"- Measured: {time.strftime('%Y-%m-%d %H:%M')} on {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), "
            f"torch {torch.__version__}; `python benchmarks/memory_sizes.py{' --quick' if a.quick else ''}`, {a.steps} steps of 4 packed 256-token rows")
    out = Path(a.out) if a.out else (work / "benchmarks.md" if a.quick else ROOT / "docs" / "benchmarks.md")
    old = [r for r in (previous_rows(out.read_text(encoding="utf-8"), TAG) if out.exists() else [])
           if (r["model"], r["config"]) not in {(x["model"], x["config"]) for x in rows}]
    rows = old + rows
    write_section(out, render(rows, host), rows, start=START, end=END, tag=TAG, title=TITLE)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
