"""Generation speed: tunesmith's evaluation path against Hugging Face `generate` as a user calls it,
on the same prompts in the same run, with a check that greedy outputs are token-identical at
equal precision. Written into docs/benchmarks.md between `<!-- generation:start -->` and
`<!-- generation:end -->`.

    python benchmarks/generation.py                  # ~5 min on 2 CPU cores
    python benchmarks/generation.py --items 16 --rounds 1 --out /tmp/gen.md
    python benchmarks/generation.py --quick          # tiny random model, seconds (figures meaningless)

Workload: the demo domain's held-out questions (the help-desk system prompt, chat template),
greedy, up to 64 new tokens (evaluation's default), answered by the default model (or `--model`,
any run directory or model tunesmith loads). Rows, each run `--rounds` times alternating, the
best round kept:
  hf-fp32-b8         model.generate on float32 weights, 8 prompts a batch in the given order,
                     left padding (the documented way to batch-generate with transformers)
  hf-bf16-b8         the same with the weights cast to bf16 (`model.to(torch.bfloat16)`)
  tunesmith-fp32     tunesmith's evaluation path (`Answerer.generate`: prompts sorted by length,
                     `--batch` a batch) on float32 weights
  tunesmith          the same at evaluation's default precision (auto: bf16 on CPUs with
                     AVX512-BF16/AMX, fp32 elsewhere)
  tunesmith-bN       levers: the default path with N prompts a batch (--sweep)
  tunesmith-unsorted lever: bf16 without sorting prompts by length
  tunesmith-fp32-bN  fp32 at the largest batch of the sweep
  tunesmith-hf-batches  the default precision with HF's batches (8 prompts in the given order)

Tokens/s counts generated tokens up to and including the end-of-sequence token (padding after a
finished answer is not counted); items/s counts answered prompts. "identical" compares the
generated token ids with the HF row of the same precision.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from eval_shared import environment, write_section  # noqa: E402

DEFAULT_OUT = ROOT / "docs" / "benchmarks.md"
START, END, TAG = "<!-- generation:start -->", "<!-- generation:end -->", "generation:data"
TITLE = "## Generation speed: tunesmith's evaluation path against HF generate"


def workload(tok, n: int) -> list[str]:
    """The demo's held-out questions as evaluation renders them (system prompt, chat template)."""
    from tunesmith.data.templating import prompt_text
    from tunesmith.demo.domain import build_domain
    from tunesmith.demo.quickstart import QUICKSTART_SYSTEM

    qs = [r["prompt"] for r in build_domain(seed=0, n_facts=40).qa_test][:n]
    return [prompt_text(tok, [{"role": "system", "content": QUICKSTART_SYSTEM}, {"role": "user", "content": q}]) for q in qs]


def trim(row: list[int], tok) -> list[int]:
    """Generated ids up to and including EOS (what was really generated, not the batch's padding)."""
    eos = tok.eos_token_id
    return row[: row.index(eos) + 1] if eos in row else row


def hf_generate(model, tok, texts: list[str], batch: int, max_new: int) -> list[list[int]]:
    """transformers' documented batched generation: left padding, greedy, prompts in the given order."""
    import torch

    tok.padding_side = "left"
    out = []
    for s in range(0, len(texts), batch):
        enc = tok(texts[s:s + batch], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            g = model.generate(**enc, max_new_tokens=max_new, do_sample=False, pad_token_id=tok.pad_token_id,
                               eos_token_id=tok.eos_token_id, temperature=None, top_p=None, top_k=None)
        out += [trim(r.tolist(), tok) for r in g[:, enc["input_ids"].shape[1]:]]
    return out


def tunesmith_generate(model, tok, texts: list[str], batch: int, max_new: int, sort: bool = True) -> list[list[int]]:
    """tunesmith's evaluation path at the token level: generation.generate_ids, which
    generate_batch (evaluation) calls before decoding, with the same sorting, batching and padding."""
    from tunesmith.generation import GenerationSettings, generate_ids

    return [trim(r, tok) for r in generate_ids(model, tok, texts, GenerationSettings(max_new_tokens=max_new),
                                                batch_size=batch, sort=sort)]


def rows_to_run(a) -> list[tuple[str, str, str, int, bool]]:
    """(name, kind, precision, batch, sorted) of every measured row."""
    from tunesmith.models.loading import inference_precision

    auto = inference_precision("auto", "cpu")
    rows = [("hf-fp32-b8", "hf", "fp32", 8, False), ("hf-bf16-b8", "hf", "bf16", 8, False),
            ("tunesmith-fp32", "ts", "fp32", a.batch, True), ("tunesmith", "ts", auto, a.batch, True)]
    if a.sweep:
        rows += [(f"tunesmith-b{b}", "ts", auto, b, True) for b in a.sweep if b != a.batch]
        rows += [("tunesmith-unsorted", "ts", auto, a.batch, False)]
        # fp32 (answers identical to HF's at any batch) at the largest batch of the sweep
        rows += [(f"tunesmith-fp32-b{max(a.sweep)}", "ts", "fp32", max(a.sweep), True)]
        # HF's own batches (8 prompts in the given order): token identity at equal precision and
        # equal batches, which separates tunesmith's computation from bf16's batch-dependent rounding
        rows += [("tunesmith-hf-batches", "ts", auto, 8, False)]
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model or run directory (default: the built-in default model)")
    p.add_argument("--items", type=int, default=48, help="prompts (default 48)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--batch", type=int, default=None, help="tunesmith's batch size (default: evaluation's default)")
    p.add_argument("--sweep", default="8,32,48", help="extra tunesmith batch sizes to measure ('' for none)")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds; each row's best round is kept")
    p.add_argument("--quick", action="store_true", help="a tiny random model and 8 prompts: checks the script only")
    p.add_argument("--out", default=None, help=f"Markdown file (default {DEFAULT_OUT}; --quick: print only)")
    a = p.parse_args(argv)
    import torch

    from tunesmith.eval.config import EvalConfig
    from tunesmith.models.builtins import DEFAULT_MODEL
    from tunesmith.models.loading import load_model

    a.batch = a.batch or EvalConfig.__dataclass_fields__["batch_size"].default
    a.sweep = [int(x) for x in a.sweep.split(",") if x]
    if a.quick:
        from tuning import tiny_model

        a.model, a.items, a.rounds, a.sweep = tiny_model(ROOT / "runs" / "bench-generation"), 8, 1, []
    spec = a.model or DEFAULT_MODEL
    models = {}
    for prec in ("fp32", "bf16"):
        models[prec], tok, _ = load_model(spec, merge_adapter=True, precision=prec)
    texts = workload(tok, a.items)
    plan = rows_to_run(a)
    best: dict[str, dict] = {}
    for rnd in range(a.rounds):
        for name, kind, prec, batch, sort in (plan if rnd % 2 == 0 else plan[::-1]):
            gc.collect()
            t = time.perf_counter()
            ids = (hf_generate(models[prec], tok, texts, batch, a.max_new_tokens) if kind == "hf"
                   else tunesmith_generate(models[prec], tok, texts, batch, a.max_new_tokens, sort))
            dt = time.perf_counter() - t
            n = sum(len(r) for r in ids)
            r = {"name": name, "precision": prec, "batch": batch, "sorted": sort, "seconds": dt, "tokens": n,
                 "tok_s": n / dt, "items_s": len(texts) / dt, "ids": ids}
            print(f"round {rnd + 1} {name:20s} {r['tok_s']:7.1f} tok/s {r['items_s']:6.2f} items/s ({n} tokens)", file=sys.stderr, flush=True)
            if name not in best or r["tok_s"] > best[name]["tok_s"]:
                best[name] = r
    ref = {"fp32": best["hf-fp32-b8"], "bf16": best["hf-bf16-b8"]}
    hf_best = max(ref.values(), key=lambda r: r["tok_s"])
    table = []
    for name, *_ in plan:
        r = best[name]
        same = sum(x == y for x, y in zip(r["ids"], ref[r["precision"]]["ids"]))
        table.append({k: v for k, v in r.items() if k != "ids"} | {
            "identical": f"{same}/{len(texts)}", "vs_hf_best": r["tok_s"] / hf_best["tok_s"]})
    env = environment(spec, None) | {"threads": torch.get_num_threads(), "items": len(texts), "max_new_tokens": a.max_new_tokens}
    md = render(table, env, hf_best["name"])
    print(md)
    if not a.quick or a.out:
        out = Path(a.out) if a.out else DEFAULT_OUT
        write_section(out, md, [env, *table], start=START, end=END, tag=TAG, title=TITLE)
        print(f"wrote {out}", file=sys.stderr)
    return 0


def render(table: list[dict], env: dict, hf_best: str) -> str:
    lines = [f"Measured {env['date']} on {env['machine']}; model {env['model']}; {env['items']} demo test questions, greedy, "
             f"up to {env['max_new_tokens']} new tokens; git {env['git']}. Ratios are against the faster HF row "
             f"({hf_best}); \"identical\" counts answers whose token ids equal HF's at the same precision.", "",
             "| row | precision | batch | sorted | tokens/s | items/s | x HF best | identical to HF |",
             "|---|---|---:|---|---:|---:|---:|---:|"]
    for r in table:
        lines.append(f"| {r['name']} | {r['precision']} | {r['batch']} | {'yes' if r['sorted'] else 'no'} | {r['tok_s']:.1f} | "
                     f"{r['items_s']:.2f} | {r['vs_hf_best']:.2f} | {r['identical']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
