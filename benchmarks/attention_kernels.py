"""Attention over packed rows: one masked call per row (what tunesmith does) against one causal
call per document (what FlashAttention's "varlen" interface does on GPUs), forward and backward.

    python benchmarks/attention_kernels.py            # ~1 min on 2 CPU cores
    python benchmarks/attention_kernels.py --reps 3   # quicker, noisier

Why it exists: a profile of tunesmith's SFT step on the default model puts 25-30% of the step in
SDPA's CPU flash kernel (mostly its backward), on rows of 512 tokens with a block-diagonal mask.
Per-document calls with `is_causal=True` compute only each document's lower triangle (sum of
len_i^2 / 2 pairs instead of 512^2 per row) and need no mask, so they should be cheaper; this
script measures whether they are on the machine at hand, for the document lengths of the two
datasets the benchmarks use, in bf16 and fp32. The attention shape is the default model's
(9 query heads, 3 key/value heads, head size 64); figures are per decoder block, over all of
a step's documents (see WORKLOADS).
"""

from __future__ import annotations

import argparse
import random
import sys
import time

from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tunesmith.data.packing import collate, pack  # noqa: E402
from tunesmith.data.templating import Example  # noqa: E402

H, HKV, D = 9, 3, 64
# (mean length, sd, documents per step): GSM8K worked solutions, 8 a step as benchmarks/vs_trl.py
# runs them; SST-2 sentences in the study's prompt, as many as fill the study arm's step of 8
# packed 512-token rows.
WORKLOADS = {"gsm8k-like": (200, 60, 8), "sst2-like": (45, 12, 88)}


def doc_lengths(mean: int, sd: int, n: int, seed: int) -> list[int]:
    rnd = random.Random(seed)
    return [max(8, min(512, int(rnd.gauss(mean, sd)))) for _ in range(n)]


def packed_batch(lengths: list[int], max_len: int) -> tuple[torch.Tensor, list[tuple[int, int, int]]]:
    """Documents of these lengths packed as tunesmith packs them (data.packing.pack, best-fit
    decreasing): the block-diagonal causal mask collate builds, (B, 1, L, L) bool, and each
    document's (row, start, end)."""
    rows = pack([Example(input_ids=[1] * n, labels=[1] * n) for n in lengths], max_len)
    spans = []
    for b, r in enumerate(rows):
        start = 0
        for d in range(r.seq_ids[-1] + 1):  # documents are contiguous in a row
            n = r.seq_ids.count(d)
            spans.append((b, start, start + n))
            start += n
    return collate(rows, pad_id=0)["attention_mask"], spans


def qkv(B: int, L: int, dtype) -> tuple[torch.Tensor, ...]:
    return tuple(torch.randn(B, h, L, D, dtype=dtype, requires_grad=True) for h in (H, HKV, HKV))


def masked_rows(mask, dtype):
    q, k, v = qkv(mask.shape[0], mask.shape[-1], dtype)

    def run():
        F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True).sum().backward()
    return run


def per_document(mask, spans, dtype):
    q, k, v = qkv(mask.shape[0], mask.shape[-1], dtype)

    def run():
        outs = [F.scaled_dot_product_attention(q[b:b + 1, :, s:e], k[b:b + 1, :, s:e], v[b:b + 1, :, s:e], is_causal=True,
                                               enable_gqa=True) for b, s, e in spans]
        torch.cat([o.flatten() for o in outs]).sum().backward()
    return run


def timed(run, reps: int) -> float:
    run()  # warm-up
    t = time.perf_counter()
    for _ in range(reps):
        run()
    return (time.perf_counter() - t) / reps * 1000


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; ms per decoder block, forward + backward")
    print("| workload | documents (mean length) | packed rows | precision | masked rows | per document | per document / masked |")
    print("|---|---|---:|---|---:|---:|---:|")
    for name, (mean, sd, n) in WORKLOADS.items():
        lengths = doc_lengths(mean, sd, n, seed=0)
        mask, spans = packed_batch(lengths, a.max_length)
        for dtype in (torch.bfloat16, torch.float32):
            m = timed(masked_rows(mask, dtype), a.reps)
            d = timed(per_document(mask, spans, dtype), a.reps)
            print(f"| {name} | {len(lengths)} ({sum(lengths) / len(lengths):.0f} tokens) | {mask.shape[0]} x {mask.shape[-1]} | "
                  f"{str(dtype).removeprefix('torch.')} | {m:.1f} ms | {d:.1f} ms | x{d / m:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
