"""Label scoring speed: the prompt read once per conversation (tunesmith.eval.likelihood's
shared-prompt rows) against the baseline of one row per (prompt, option), on the default model
with classification prompts shaped like the example studies'. Prints items/s of each, the
speed-up, and the largest score difference between the two (they must agree).

    python benchmarks/label_scoring.py                    # 32 prompts of ~300 tokens, 2 and 3 labels
    python benchmarks/label_scoring.py --n 64 --words 400
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def per_option_rows(model, tok, convs, options, batch_size):
    """The baseline: each (prompt, option) rendered and scored as its own row."""
    import torch

    from tunesmith.data.packing import collate, unpacked
    from tunesmith.data.templating import render_chat
    from tunesmith.training.losses import sequence_logprobs

    pairs = [(i, j) for i, o in enumerate(options) for j in range(len(o))]
    rows = unpacked([render_chat(tok, convs[i] + [{"role": "assistant", "content": options[i][j]}], loss_on="last") for i, j in pairs])
    out = [[0.0] * len(o) for o in options]
    with torch.no_grad():
        for s in range(0, len(rows), batch_size):
            lp = sequence_logprobs(model, collate(rows[s:s + batch_size], tok.pad_token_id))
            for (i, j), v in zip(pairs[s:s + batch_size], lp.tolist()):
                out[i][j] = v
    return out


def main(argv=None) -> int:
    import random

    import torch

    from tunesmith.eval.likelihood import option_logprobs
    from tunesmith.models.builtins import DEFAULT_MODEL
    from tunesmith.models.loading import load_model

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=32, help="prompts")
    p.add_argument("--words", type=int, default=220, help="words per prompt (~1.3 tokens each)")
    p.add_argument("--batch-size", type=int, default=8)
    a = p.parse_args(argv)
    model, tok, _ = load_model(DEFAULT_MODEL)
    rng = random.Random(0)
    vocab = "the film study patient result trial was not very good clear effect treatment group showed data".split()
    convs = [[{"role": "user", "content": " ".join(rng.choice(vocab) for _ in range(a.words)) + "\nAnswer with one word."}] for _ in range(a.n)]
    print(f"{DEFAULT_MODEL}, {a.n} prompts of {a.words} words, batch {a.batch_size}, torch threads {torch.get_num_threads()}")
    for labels in (["negative", "positive"], ["yes", "no", "maybe"]):
        opts = [labels] * a.n
        t0 = time.perf_counter()
        base = per_option_rows(model, tok, convs, opts, a.batch_size * len(labels))
        t_base = time.perf_counter() - t0
        t0 = time.perf_counter()
        new = option_logprobs(model, tok, convs, opts, batch_size=a.batch_size)
        t_new = time.perf_counter() - t0
        diff = max(abs(x - y) for r1, r2 in zip(base, new) for x, y in zip(r1, r2))
        print(f"{len(labels)} labels: one row per option {a.n / t_base:.2f} items/s | shared prompt {a.n / t_new:.2f} items/s | "
              f"speed-up x{t_base / t_new:.2f} | max score difference {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
