"""Training speed: tokens/s, peak memory and model-FLOPs utilisation (MFU) of one optimizer step
of supervised fine-tuning on the default model, for the choices tunesmith's SFT loop makes, each
against the named baseline measured in the same run: Hugging Face's own loss (full-vocabulary
logits) on padded fp32 batches.

    python benchmarks/train_speed.py                       # ~10 min on 2 CPU cores
    python benchmarks/train_speed.py --steps 2 --only baseline,tunesmith
    python benchmarks/train_speed.py --out /tmp/speed.md   # default: docs/benchmarks.md

The rows, each a fresh copy of the same starting weights trained with AdamW on the same examples:
  baseline       fp32, examples padded to the longest in the batch, model(..., labels=...)
  bf16           the same with bf16 autocast
  bf16+packed    bf16, examples packed into fixed rows with per-document masks, full logits
  tunesmith      bf16, packed, output layer computed only on trained tokens (tunesmith's loss)
  tunesmith-lora the same with LoRA adapters (rank 16), as the example studies train

Data: GSM8K worked solutions (data-shared/gsm8k/train.jsonl, written by
examples/prepare_shared.py) when present, else the demo domain's QA pairs; `--data` takes any
prompt/completion or messages file. MFU = model FLOPs per token x tokens/s / measured matmul peak
of the precision used; model FLOPs per token = 6 x (parameters in matrix multiplies, output layer
included) + 6 x layers x hidden x row length (causal attention), the convention of the PaLM paper;
a LoRA step does less work than that (no weight gradients for frozen matrices), so its MFU reads
as "full-model-equivalent".
"""

from __future__ import annotations

import argparse
import copy
import gc
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from eval_shared import environment, only_names, write_section  # noqa: E402

DEFAULT_OUT = ROOT / "docs" / "benchmarks.md"
START, END, TAG = "<!-- train-speed:start -->", "<!-- train-speed:end -->", "train-speed:data"
TITLE = "## Training speed: tokens/s, peak memory and MFU of an SFT step"
CONFIGS = {  # name: (precision, packed, loss, lora)
    "baseline": ("fp32", False, "hf", False),
    "bf16": ("bf16", False, "hf", False),
    "bf16+packed": ("bf16", True, "full", False),
    "tunesmith": ("bf16", True, "trained", False),
    "tunesmith-lora": ("bf16", True, "trained", True),
}


def matmul_peak(dtype, n: int = 2048, repeats: int = 5) -> float:
    """Best measured FLOP/s of an n x n by n x n matrix multiply in `dtype`."""
    import torch

    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * n**3 / (time.perf_counter() - t))
    return best


def load_examples(path: str | None, tok, max_length: int):
    from tunesmith.data.schemas import load_dataset
    from tunesmith.data.templating import encode_rows

    if path is None:
        shared = ROOT / "data-shared" / "gsm8k" / "train.jsonl"
        if shared.exists():
            path = str(shared)
        else:
            from tunesmith.demo.domain import write_domain

            path = str(write_domain(Path("runs") / "benchmarks-speed" / "demo-data")["qa_train"])
    ds = load_dataset(path)
    examples, _ = encode_rows(ds.rows(), ds.type, tok, max_length=max_length)
    return path, examples


def flops_per_token(model, row_length: int) -> float:
    """6 x matmul parameters (embedding lookup excluded, output layer included) + causal attention."""
    cfg = model.config
    emb = model.get_input_embeddings().weight.numel()
    n = sum(p.numel() for p in model.parameters()) - emb
    if getattr(cfg, "tie_word_embeddings", False):
        n += emb  # the tied output layer is a (hidden x vocab) matmul on every position
    return 6 * n + 6 * cfg.num_hidden_layers * cfg.hidden_size * row_length


def collate_for(rows, pad_id: int, loss: str) -> dict:
    """tunesmith's collated batch; for transformers' own loss ("hf") also the plain (B, L) padding
    mask it takes instead of the per-document (B, 1, L, L) mask."""
    import torch

    from tunesmith.data.packing import collate

    batch = collate(rows, pad_id)
    if loss == "hf":
        batch["pad_mask"] = (torch.arange(batch["input_ids"].shape[1])[None] < torch.tensor([len(r) for r in rows])[:, None]).long()
    return batch


def step_loss(model, batch: dict, loss: str):
    """Summed cross-entropy of the trained tokens and their count, three ways."""
    import torch.nn.functional as F

    from tunesmith.data.templating import IGNORE
    from tunesmith.training.losses import causal_lm_loss, hidden_states, token_logits

    if loss == "trained":
        return causal_lm_loss(model, batch)
    targets = batch["labels"][:, 1:]
    n = int((targets != IGNORE).sum())
    if loss == "hf":  # transformers' own path: (B, L, V) logits, mean loss; scaled back to a sum
        out = model(input_ids=batch["input_ids"], attention_mask=batch["pad_mask"], labels=batch["labels"])
        return out.loss * n, n
    h = hidden_states(model, batch)  # (B, L, H); full logits (B*(L-1), V) as most loops compute them
    logits = token_logits(model, h[:, :-1].reshape(-1, h.shape[-1]))
    return F.cross_entropy(logits, targets.reshape(-1), ignore_index=IGNORE, reduction="sum"), n


def measure(name: str, base_model, tok, examples, *, batch_size: int, max_length: int, steps: int, peaks: dict) -> dict:
    import torch

    from tunesmith.config import AdapterConfig
    from tunesmith.data.packing import pack, unpacked
    from tunesmith.training.adapters import apply_adapter
    from tunesmith.training.runtime import autocast, peak_memory_mib, reset_peak_memory

    precision, packed, loss, lora = CONFIGS[name]
    gc.collect()
    device = torch.device("cpu")
    reset_peak_memory(device)
    model = copy.deepcopy(base_model)
    model = apply_adapter(model, AdapterConfig(mode="lora" if lora else "full")).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    rows = pack(examples, max_length) if packed else unpacked(examples)
    batches = [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)][: steps + 1]
    if len(batches) < 2:  # one warm-up step and at least one timed step
        raise SystemExit(f"{name}: {len(rows)} rows make fewer than 2 batches of {batch_size}; use more data or a smaller --batch-size")
    times, tokens = [], 0
    for i, group in enumerate(batches):
        batch = collate_for(group, tok.pad_token_id, loss)
        t = time.perf_counter()
        with autocast(device, precision):
            s, n = step_loss(model, batch, loss)
        (s / max(n, 1)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i > 0:  # the first step warms up (allocations, kernel selection)
            times.append(time.perf_counter() - t)
            tokens += sum(len(r) for r in group)
    tok_s = tokens / sum(times)
    fpt = flops_per_token(base_model, max_length if packed else round(tokens / (len(times) * batch_size)))
    out = {"config": name, "precision": precision, "packed": packed, "loss": loss, "lora": lora,
           "tokens_per_s": round(tok_s, 1), "step_s": round(sum(times) / len(times), 2), "tokens_per_step": round(tokens / len(times)),
           "peak_memory_mib": round(peak_memory_mib(device)), "mfu": tok_s * fpt / peaks[precision]}
    print(f"{name:15s} {tok_s:7.1f} tok/s  {out['step_s']:6.2f} s/step  peak {out['peak_memory_mib'] / 1024:5.1f} GiB  MFU {out['mfu']:.1%}",
          flush=True)
    del model, opt
    return out


def render(rows: list[dict], env: dict, info: dict) -> str:
    base = next((r for r in rows if r["config"] == "baseline"), None)
    lines = [f"- Measured: {env['date']}; machine: {env['machine']}; load average at the start: {env['load_start']}",
             f"- Versions: {', '.join(f'{k} {v}' for k, v in env['versions'].items())}; tunesmith checkout {env.get('git') or 'unknown'}",
             f"- Model {info['model']}; data {info['data']} ({info['examples']} examples); batch {info['batch_size']} "
             f"(examples when padded, {info['max_length']}-token rows when packed); {info['steps']} timed steps after 1 warm-up step",
             f"- Measured matmul peak ({info['matmul_n']}x{info['matmul_n']}): fp32 {info['peak_fp32'] / 1e9:.0f} GFLOP/s, "
             f"bf16 {info['peak_bf16'] / 1e9:.0f} GFLOP/s",
             "", "| config | precision | batches | loss over | adapter | tokens/s | x baseline | s/step | peak memory | MFU |",
             "|---|---|---|---|---|---:|---:|---:|---:|---:|"]
    what = {"hf": "all positions (transformers' loss)", "full": "all positions", "trained": "trained tokens only"}
    for r in rows:
        ratio = f"x{r['tokens_per_s'] / base['tokens_per_s']:.2f}" if base else "-"
        lines.append(f"| {r['config']} | {r['precision']} | {'packed' if r['packed'] else 'padded'} | {what[r['loss']]} | "
                     f"{'LoRA' if r['lora'] else 'full'} | {r['tokens_per_s']:.0f} | {ratio} | {r['step_s']:.1f} | "
                     f"{r['peak_memory_mib'] / 1024:.1f} GiB | {r['mfu']:.1%} |")
    lines += ["", "Peak memory: the process's resident peak during that row's steps (weights, optimizer state, "
              "activations and the Python heap)."]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", help=f"comma-separated subset of {','.join(CONFIGS)}")
    p.add_argument("--model", help="model to measure (default: the built-in default model)")
    p.add_argument("--data", help="SFT data file (default: GSM8K worked solutions if prepared, else the demo QA pairs)")
    p.add_argument("--steps", type=int, default=4, help="timed optimizer steps per row")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--out", default=str(DEFAULT_OUT))
    a = p.parse_args(argv)
    names = only_names(a.only, CONFIGS, "config(s)")
    import torch

    from tunesmith.models.builtins import DEFAULT_MODEL
    from tunesmith.models.loading import load_model

    spec = a.model or DEFAULT_MODEL
    env = environment(spec, None)
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(f"matmul peak: fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s", flush=True)
    model, tok, _ = load_model(spec)
    data, examples = load_examples(a.data, tok, a.max_length)
    rows = [measure(n, model, tok, examples, batch_size=a.batch_size, max_length=a.max_length, steps=a.steps, peaks=peaks)
            for n in names]
    info = {"model": spec, "data": Path(data).relative_to(ROOT) if Path(data).is_relative_to(ROOT) else data,
            "examples": len(examples), "batch_size": a.batch_size, "max_length": a.max_length, "steps": a.steps,
            "matmul_n": 2048, "peak_fp32": peaks["fp32"], "peak_bf16": peaks["bf16"]}
    table = render(rows, env, info)
    print(table)
    write_section(Path(a.out), table, rows, start=START, end=END, tag=TAG, title=TITLE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
