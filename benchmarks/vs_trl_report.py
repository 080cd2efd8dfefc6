"""The table and headline of benchmarks/vs_trl.py, and where they go in docs/benchmarks.md."""

from __future__ import annotations

from pathlib import Path

from eval_shared import write_section

START, END, TAG = "<!-- vs-trl:start -->", "<!-- vs-trl:end -->", "vs-trl:data"
TITLE = "## Training against TRL: tokens/s, peak memory, loss and MFU side by side"
LEVER_START, LEVER_END, LEVER_TAG = "<!-- vs-trl-levers:start -->", "<!-- vs-trl-levers:end -->", "vs-trl-levers:data"
LEVER_TITLE = "### tunesmith's training levers, each on and off (same batches, alternating rounds)"


def _opts(r: dict) -> str:
    o = r["options"]
    if r["who"] == "trl":
        return "gradient checkpointing" if o.get("gc") else "-"
    return ", ".join(f"{k}={v}" for k, v in o.items()) or "defaults"


def loss_gap(a: list[float], b: list[float]) -> float:
    """Relative difference of the mean loss over the same steps."""
    n = min(len(a), len(b))
    ma, mb = sum(a[:n]) / n, sum(b[:n]) / n
    return abs(ma - mb) / max(abs(mb), 1e-9)


def headline(rows: list[dict], tolerance: float) -> list[str]:
    out = []
    for adapter in ("lora", "full"):
        ts = next((r for r in rows if r["config"] == f"tunesmith-{adapter}"), None)
        trl = [r for r in rows if r["who"] == "trl" and r["adapter"] == adapter]
        if not ts or not trl:
            continue
        fast = max(trl, key=lambda r: r["tokens_per_s"])
        lean = min(trl, key=lambda r: r["peak_memory_mib"])
        same = next((r for r in trl if r["precision"] == ts["precision"] and not r["options"].get("gc")), fast)
        gap = loss_gap(ts["losses"], same["losses"])
        out.append(f"- **{'LoRA' if adapter == 'lora' else 'Full fine-tuning'}: x{ts['tokens_per_s'] / fast['tokens_per_s']:.2f} "
                   f"TRL's best tokens/s** ({ts['tokens_per_s']:.0f} vs {fast['tokens_per_s']:.0f} tok/s, `{fast['config']}`), "
                   f"**x{ts['peak_memory_mib'] / lean['peak_memory_mib']:.2f} TRL's lowest peak memory** "
                   f"({ts['peak_memory_mib'] / 1024:.2f} vs {lean['peak_memory_mib'] / 1024:.2f} GiB, `{lean['config']}`; "
                   f"x{ts['peak_memory_mib'] / fast['peak_memory_mib']:.2f} that of TRL's fastest); mean loss over the same "
                   f"steps within {gap:.2%} of `{same['config']}` ({'within' if gap <= tolerance else 'OUTSIDE'} the "
                   f"{tolerance:.0%} tolerance); MFU {ts['mfu']:.1%} vs {fast['mfu']:.1%}")
    return out


def render(rows: list[dict], env: dict, info: dict) -> str:
    pk = info["peaks"]
    first = str(env["load_start"]).split("/")[0].strip()
    busy = first.replace(".", "", 1).isdigit() and float(first) >= 1.0  # a 1-minute load of a whole core or more
    lines = [f"- Measured: {env['date']}; machine: {env['machine']}; load average at the start: {env['load_start']}"
             + (" (other jobs ran on the machine: absolute figures are low, ratios within the run compare)" if busy else ""),
             f"- Versions: {', '.join(f'{k} {v}' for k, v in env['versions'].items())}; tunesmith checkout {env.get('git') or 'unknown'}",
             f"- Model {info['model']}; data {info['data']}: {info['examples']} examples (mean {info['mean_len']:.0f} tokens, "
             f"{info['tokens']} tokens, {info['trained_tokens']} trained); {info['steps']} optimizer steps of {info['batch_examples']} "
             f"examples, the first untimed; rows of {info['max_length']} tokens when packed; lr {info['lr']}; {info['rounds']} alternating rounds",
             f"- Measured matmul peak (2048x2048, best of the rounds): fp32 {pk['fp32'] / 1e9:.0f} GFLOP/s, bf16 {pk['bf16'] / 1e9:.0f} GFLOP/s",
             "", *headline(rows, info["tolerance"]), "",
             "| contender | adapter | precision | options | tokens/s (best; each round) | x TRL best (levers: x default) | peak memory | "
             "x TRL lowest (levers: x default) | "
             "mean loss | loss gap | MFU |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        # Lever runs have no TRL rows: they compare with tunesmith's defaults instead.
        trl = [x for x in rows if x["who"] == "trl" and x["adapter"] == r["adapter"]] or \
            [x for x in rows if x["config"] == f"tunesmith-{r['adapter']}"]
        fast = max(trl, key=lambda x: x["tokens_per_s"]) if trl else None
        lean = min(trl, key=lambda x: x["peak_memory_mib"]) if trl else None
        ref = next((x for x in trl if x["precision"] == r["precision"] and not x["options"].get("gc")), None)
        gap = f"{loss_gap(r['losses'], ref['losses']):.2%}" if ref and ref is not r else "-"
        speed = "x%.2f" % (r["tokens_per_s"] / fast["tokens_per_s"]) if fast else "-"
        memory = "x%.2f" % (r["peak_memory_mib"] / lean["peak_memory_mib"]) if lean else "-"
        each = " / ".join("%.0f" % x for x in r["tokens_per_s_rounds"])
        lines.append(f"| {r['config']} | {r['adapter']} | {r['precision']} | {_opts(r)} | {r['tokens_per_s']:.0f} ({each}) | "
                     f"{speed} | {r['peak_memory_mib'] / 1024:.2f} GiB | {memory} | "
                     f"{sum(r['losses']) / len(r['losses']):.4f} | {gap} | {r['mfu']:.1%} |")
    lines += ["", "Tokens/s: non-pad input tokens (prompt and answer) of steps 2..N over their wall time, the same count for every "
              "contender. Peak memory: the contender's own process, resident high-water mark after loading the model (weights "
              "included), the lowest of the rounds. Loss gap: relative difference of the mean training loss over the same steps "
              "against TRL at the same precision without gradient checkpointing. MFU: model FLOPs of the useful tokens over the "
              "measured matmul peak of the row's precision (for LoRA, full-model-equivalent)."]
    return "\n".join(lines)


def write(out: Path, table: str, rows: list[dict], *, levers: bool) -> None:
    if levers:
        write_section(out, table, rows, start=LEVER_START, end=LEVER_END, tag=LEVER_TAG, title=LEVER_TITLE)
    else:
        write_section(out, table, rows, start=START, end=END, tag=TAG, title=TITLE)
