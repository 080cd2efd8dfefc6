"""Share of computed positions that are padding in an epoch of SFT batches, for padded and packed
rows, in a plain shuffled order and length-grouped (data.group_by_length). No model runs: this
counts positions (each batch is padded to its longest row), so it takes seconds.

    python benchmarks/padding.py                          # GSM8K and SST-2 (data-shared/), batch 8
    python benchmarks/padding.py --data my.jsonl --batch-size 16
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def padding_share(rows, batch_size: int, order: list[int]) -> float:
    """Padded positions / computed positions over the batches of `rows` taken in `order`."""
    computed = real = 0
    for i in range(0, len(order), batch_size):
        lengths = [len(rows[j]) for j in order[i:i + batch_size]]
        computed += max(lengths) * len(lengths)
        real += sum(lengths)
    return 1 - real / computed


def measure(path: str, tok, batch_size: int, max_length: int, seed: int = 0) -> dict:
    from tunesmith.data.schemas import load_dataset
    from tunesmith.data.templating import encode_rows
    from tunesmith.training.batching import batch_order, make_rows

    ds = load_dataset(path)
    examples, _ = encode_rows(ds.rows(), ds.type, tok, max_length=max_length)
    out = {"data": path, "examples": len(examples)}
    for packing in (False, True):
        rows = make_rows(examples, max_length, packing)
        for grouped in (False, True):
            order = batch_order(rows, batch_size, seed, 0, grouped)
            out[f"{'packed' if packing else 'padded'}{'-grouped' if grouped else ''}"] = padding_share(rows, batch_size, order)
        out[f"{'packed' if packing else 'padded'}-rows"] = len(rows)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", action="append", help="SFT data file(s) (default: data-shared GSM8K and SST-2)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=512)
    a = p.parse_args(argv)
    from tunesmith.models.builtins import DEFAULT_MODEL
    from tunesmith.models.loading import load_tokenizer

    tok = load_tokenizer(DEFAULT_MODEL)
    paths = a.data or [str(p) for p in (ROOT / "data-shared" / "gsm8k" / "train.jsonl", ROOT / "data-shared" / "sst2" / "train.jsonl") if p.exists()]
    print(f"| data | examples | padded rows: padding | padded, grouped | packed rows | packed: padding | packed, grouped |   (batch {a.batch_size}, rows of {a.max_length})")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for path in paths:
        m = measure(path, tok, a.batch_size, a.max_length)
        name = Path(path).relative_to(ROOT) if Path(path).is_relative_to(ROOT) else path
        print(f"| {name} | {m['examples']} | {m['padded']:.1%} | {m['padded-grouped']:.1%} | {m['packed-rows']} | "
              f"{m['packed']:.1%} | {m['packed-grouped']:.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
