"""Score fixed answer options by their log-likelihood under a model.

Classification with a generative model picks the label the model finds most likely as its
answer (no free-text parsing), and multiple-choice probes pick the likeliest option the same
way. Each (conversation, option) pair is rendered with the chat template, the option is the
assistant turn, and its tokens' log-probabilities are summed.
"""

from __future__ import annotations

import torch

from tunesmith.data.packing import collate, unpacked
from tunesmith.data.templating import render_chat
from tunesmith.training.losses import sequence_logprobs


@torch.no_grad()
def option_logprobs(model, tok, conversations: list[list[dict]], options: list[list[str]], *,
                    batch_size: int = 16, normalize: bool = False, progress: bool = False) -> list[list[float]]:
    """For each conversation (ending with the user turn), the log-probability of each option.

    normalize=True divides by the option's token count (favours no length); the default sum
    is right for short labels of similar length.
    """
    from tqdm.auto import tqdm

    pairs = [(i, j) for i, opts in enumerate(options) for j in range(len(opts))]
    examples = []
    for i, j in pairs:
        msgs = conversations[i] + [{"role": "assistant", "content": options[i][j]}]
        examples.append(render_chat(tok, msgs, loss_on="last"))
    rows = unpacked(examples)
    # Sort by length so that batches carry little padding; scores go back by index.
    order = sorted(range(len(rows)), key=lambda k: len(rows[k]))
    scores = [0.0] * len(rows)
    model.eval()
    device = next(model.parameters()).device
    bar = tqdm(total=len(rows), unit="option", desc="score", disable=not progress)
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        batch = {k: v.to(device) for k, v in collate([rows[k] for k in idx], tok.pad_token_id).items()}
        lp = sequence_logprobs(model, batch)
        for k, v in zip(idx, lp.tolist()):
            n = max(1, examples[k].n_trained) if normalize else 1
            scores[k] = v / n
        bar.update(len(idx))
    bar.close()
    out: list[list[float]] = [[0.0] * len(o) for o in options]
    for (i, j), v in zip(pairs, scores):
        out[i][j] = v
    return out


def pick(options: list[list[str]], scores: list[list[float]]) -> list[str]:
    """The highest-scoring option of each item."""
    return [opts[max(range(len(opts)), key=lambda j: sc[j])] for opts, sc in zip(options, scores)]
