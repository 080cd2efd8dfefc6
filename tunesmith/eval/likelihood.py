"""Score fixed answer options by their log-likelihood under a model.

Classification with a generative model picks the label the model finds most likely as its
answer (no free-text parsing), and multiple-choice probes pick the likeliest option the same
way. Each (conversation, option) pair is rendered with the chat template, the option is the
assistant turn, and its tokens' log-probabilities are summed.
"""

from __future__ import annotations

import torch

from tunesmith.data.templating import IGNORE, render_chat
from tunesmith.training.losses import hidden_states, token_logits


@torch.no_grad()
def option_logprobs(model, tok, conversations: list[list[dict]], options: list[list[str]], *,
                    batch_size: int = 16, normalize: bool = False, progress: bool = False) -> list[list[float]]:
    """For each conversation (ending with the user turn), the log-probability of each option.

    The prompt is read once per conversation, not once per option: one row holds the prompt
    followed by every option, and the attention mask lets each option see the prompt and its
    own earlier tokens only (positions restart after the prompt for each option), so each
    option's score equals scoring prompt + option alone (tested), at ~1/K of the cost for K
    options with a long prompt. Conversations whose options do not tokenize to a common prompt
    prefix are scored one option per row.

    normalize=True divides by the option's token count (favours no length); the default sum
    is right for short labels of similar length.
    """
    from tqdm.auto import tqdm

    items = [_shared_row([render_chat(tok, conversations[i] + [{"role": "assistant", "content": o}], loss_on="last")
                          for o in opts]) for i, opts in enumerate(options)]
    order = sorted(range(len(items)), key=lambda k: len(items[k].input_ids))  # little padding per batch
    out: list[list[float]] = [[0.0] * len(o) for o in options]
    model.eval()
    device = next(model.parameters()).device
    bar = tqdm(total=sum(len(o) for o in options), unit="option", desc="score", disable=not progress)
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        batch, pred_at, targets, owner = _collate_shared([items[k] for k in idx], tok.pad_token_id, device)
        h = hidden_states(model, batch)  # (B, L, H)
        logits = token_logits(model, h[pred_at[:, 0], pred_at[:, 1]])  # (N, V): only the scored tokens
        lp = torch.log_softmax(logits, -1).gather(-1, targets[:, None]).squeeze(-1)  # (N,)
        for (b, j), v in _sum_by(owner, lp).items():
            k = idx[b]
            n = max(1, items[k].n_trained[j]) if normalize else 1
            out[k][j] = v / n
        bar.update(sum(len(options[k]) for k in idx))
    bar.close()
    return out


class _SharedRow:
    """A prompt followed by K option blocks: input_ids, block id per token (-1: the prompt),
    position ids, and per option the (predicting index, target token) pairs of its scored tokens."""

    def __init__(self):
        self.input_ids: list[int] = []
        self.block: list[int] = []
        self.position_ids: list[int] = []
        self.scored: list[list[tuple[int, int]]] = []
        self.n_trained: list[int] = []


def _shared_row(examples) -> _SharedRow:
    """One row for the options of one conversation (examples: prompt + option k, option trained)."""
    starts = [next((t for t, y in enumerate(ex.labels) if y != IGNORE), len(ex.labels)) for ex in examples]
    prefix = examples[0].input_ids[: starts[0]]
    row = _SharedRow()
    if all(ex.input_ids[:st] == prefix for ex, st in zip(examples, starts)) and min(starts) > 0:
        row.input_ids, row.block, row.position_ids = list(prefix), [-1] * len(prefix), list(range(len(prefix)))
        for k, (ex, st) in enumerate(zip(examples, starts)):
            base = len(row.input_ids)
            tail = ex.input_ids[st:]
            row.input_ids += tail
            row.block += [k] * len(tail)
            row.position_ids += list(range(st, st + len(tail)))
            # token t of the block is predicted by the token before it: the prompt's last token for t = 0
            row.scored.append([(base + t - 1 if t else st - 1, tail[t]) for t in range(len(tail)) if ex.labels[st + t] != IGNORE])
            row.n_trained.append(ex.n_trained)
        return row
    # The options change how the prompt tokenizes: each option becomes its own block with its own copy.
    for k, ex in enumerate(examples):
        base = len(row.input_ids)
        row.input_ids += ex.input_ids
        row.block += [k] * len(ex.input_ids)
        row.position_ids += list(range(len(ex.input_ids)))
        row.scored.append([(base + t - 1, y) for t, y in enumerate(ex.labels) if t and y != IGNORE])
        row.n_trained.append(ex.n_trained)
    return row


def _collate_shared(rows: list[_SharedRow], pad_id: int, device):
    """(batch for hidden_states, pred_at (N, 2) [row, index], targets (N,), owner [(row, option)] per target)."""
    L = max(len(r.input_ids) for r in rows)
    B = len(rows)
    ids = torch.full((B, L), pad_id, dtype=torch.long)
    pos = torch.zeros((B, L), dtype=torch.long)
    blk = torch.full((B, L), -2, dtype=torch.long)  # -2: padding
    pred, tgt, owner = [], [], []
    for b, r in enumerate(rows):
        n = len(r.input_ids)
        ids[b, :n], pos[b, :n], blk[b, :n] = torch.tensor(r.input_ids), torch.tensor(r.position_ids), torch.tensor(r.block)
        for j, pairs in enumerate(r.scored):
            for at, y in pairs:
                pred.append((b, at))
                tgt.append(y)
                owner.append((b, j))
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    # query q sees key j (j <= q) in the prompt (-1) or in its own block; padding sees nothing but itself
    visible = (blk[:, None, :] == -1) | (blk[:, None, :] == blk[:, :, None])  # (B, L, L)
    mask = causal & visible & (blk[:, None, :] != -2)
    mask |= torch.eye(L, dtype=torch.bool)
    batch = {"input_ids": ids.to(device), "position_ids": pos.to(device), "attention_mask": mask[:, None].to(device)}
    return batch, torch.tensor(pred, dtype=torch.long, device=device), torch.tensor(tgt, dtype=torch.long, device=device), owner


def _sum_by(owner: list[tuple[int, int]], values: torch.Tensor) -> dict[tuple[int, int], float]:
    out: dict[tuple[int, int], float] = {}
    for key, v in zip(owner, values.tolist()):
        out[key] = out.get(key, 0.0) + v
    return out


def pick(options: list[list[str]], scores: list[list[float]]) -> list[str]:
    """The highest-scoring option of each item."""
    return [opts[max(range(len(opts)), key=lambda j: sc[j])] for opts, sc in zip(options, scores)]
