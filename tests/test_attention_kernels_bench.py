"""benchmarks/attention_kernels.py compares two computations of the same attention: one masked SDPA
call per packed row and one causal call per document. Check that they are the same values (so the
timing compares like with like), that its packing and mask follow tunesmith's, and that it runs."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import attention_kernels as ak  # noqa: E402

from tunesmith.data.packing import collate, pack  # noqa: E402
from tunesmith.data.templating import Example  # noqa: E402


def test_block_mask_is_tunesmiths_collate_mask():
    lengths = [5, 3, 7, 2, 6]
    rows = ak.pack_rows(lengths, 12)
    examples = [Example(input_ids=[1] * n, labels=[1] * n) for n in lengths]
    packed = pack(examples, 12)
    assert sorted(len(r) for r in packed) == sorted(sum(r) for r in rows)
    L = max(sum(r) for r in rows)
    # the same documents in the same order in each row: compare masks row for row
    ours = collate(packed, 0, pad_to=L)["attention_mask"]
    by_len = {tuple(len(x) for x in _docs(r)): i for i, r in enumerate(packed)}
    for b, r in enumerate(rows):
        assert torch.equal(ak.block_mask(rows, L)[b], ours[by_len[tuple(r)]])


def _docs(row):
    out, start = [], 0
    for i in range(1, len(row.seq_ids) + 1):
        if i == len(row.seq_ids) or row.seq_ids[i] != row.seq_ids[start]:
            out.append(row.seq_ids[start:i])
            start = i
    return out


def test_per_document_attention_equals_masked_rows():
    torch.manual_seed(0)
    rows = ak.pack_rows([9, 4, 7, 3, 6], 16)
    L = max(sum(r) for r in rows)
    q, k, v = (torch.randn(len(rows), h, L, ak.D) for h in (ak.H, ak.HKV, ak.HKV))
    masked = F.scaled_dot_product_attention(q, k, v, attn_mask=ak.block_mask(rows, L), enable_gqa=True)
    for b, r in enumerate(rows):
        start = 0
        for n in r:
            one = F.scaled_dot_product_attention(q[b:b + 1, :, start:start + n], k[b:b + 1, :, start:start + n],
                                                 v[b:b + 1, :, start:start + n], is_causal=True, enable_gqa=True)
            torch.testing.assert_close(one[0], masked[b, :, start:start + n], rtol=1e-5, atol=1e-5)
            start += n


def test_runs_and_prints_its_table(capsys):
    assert ak.main(["--reps", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("| gsm8k-like |") == 2 and out.count("| sst2-like |") == 2
