"""benchmarks/attention_kernels.py compares two computations of the same attention: one masked SDPA
call per packed row (tunesmith's own packing and mask) and one causal call per document. Check that
they are the same values (so that the timing compares like with like) and that it runs."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import attention_kernels as ak  # noqa: E402


def test_per_document_attention_equals_masked_rows():
    torch.manual_seed(0)
    mask, spans = ak.packed_batch([9, 4, 7, 3, 6], 16)
    assert sorted(e - s for _, s, e in spans) == [3, 4, 6, 7, 9] and mask.shape[0] == 2
    q, k, v = (torch.randn(mask.shape[0], h, mask.shape[-1], ak.D) for h in (ak.H, ak.HKV, ak.HKV))
    masked = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    for b, s, e in spans:
        one = F.scaled_dot_product_attention(q[b:b + 1, :, s:e], k[b:b + 1, :, s:e], v[b:b + 1, :, s:e], is_causal=True, enable_gqa=True)
        torch.testing.assert_close(one[0], masked[b, :, s:e], rtol=1e-5, atol=1e-5)


def test_runs_and_prints_its_table(capsys):
    assert ak.main(["--reps", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("| gsm8k-like |") == 2 and out.count("| sst2-like |") == 2
