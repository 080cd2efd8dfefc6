"""Raw-text completion for `/v1/completions`: continue token-id prompts (left-padded batches, the
same greedy/sampling settings as `tunesmith.generation`) and score sequences token by token.

Scoring is what loglikelihood evaluation (lm-evaluation-harness `local-completions`, echo +
logprobs) needs: the log-probability of every token given the ones before it, from the same
`hidden_states` / `token_logits` that `tunesmith.eval.likelihood` uses, so a served score equals
tunesmith's own (tested to 1e-4).
"""

from __future__ import annotations

import dataclasses

import torch

from tunesmith.generation import GenerationSettings
from tunesmith.training.losses import hidden_states, token_logits

SCORE_ROWS = 8  # sequences per forward pass when scoring
SCORE_CHUNK = 256  # positions whose vocabulary-wide logits are held at once


@torch.no_grad()
def generate_ids(model, tok, prompts: list[list[int]], settings: GenerationSettings) -> list[tuple[list[int], str]]:
    """(generated token ids, finish_reason) per prompt. The ids end with the end-of-sequence token
    when the model produced it (finish "stop"); a stop string cuts them where it starts."""
    device = next(model.parameters()).device
    width = max(len(p) for p in prompts)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[i, width - len(p):] = 1
    model.eval()
    torch.manual_seed(settings.seed)
    # Stop strings are applied to the generated text only, afterwards: transformers' stop-string
    # criterion also matches across the prompt's end, which would stop a completion too early.
    kwargs = dataclasses.replace(settings, stop=[]).kwargs(tok)
    gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs)
    eos = _eos_ids(model, tok)
    out = []
    for row in gen[:, width:].tolist():
        end = next((k for k, t in enumerate(row) if t in eos), None)
        toks, reason = (row[: end + 1], "stop") if end is not None else (row, "length")
        out.append(_cut_stop(tok, toks, settings.stop, reason, eos))
    return out


def _eos_ids(model, tok) -> set[int]:
    ids = model.generation_config.eos_token_id if getattr(model, "generation_config", None) is not None else None
    ids = ids if isinstance(ids, list) else [ids]
    return {i for i in [*ids, tok.eos_token_id] if i is not None}


def _cut_stop(tok, toks: list[int], stop: list[str], reason: str, eos: set[int]) -> tuple[list[int], str]:
    """Tokens up to the first stop string (the string itself is not returned, as in OpenAI's API)."""
    if not stop:
        return toks, reason
    text = tok.decode([t for t in toks if t not in eos], skip_special_tokens=True)
    at = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    if at < 0:
        return toks, reason
    for k in range(len(toks) + 1):
        if len(tok.decode(toks[:k], skip_special_tokens=True)) >= at:
            return toks[:k], "stop"
    return toks, "stop"


def text_of(tok, toks: list[int], eos: set[int] | None = None, limit: int | None = None) -> str:
    """Decoded text without end-of-sequence tokens, cut at `limit` characters."""
    eos = eos or set()
    text = tok.decode([t for t in toks if t not in eos], skip_special_tokens=True)
    return text if limit is None else text[:limit]


@torch.no_grad()
def score(model, tok, seqs: list[list[int]], top: int = 0) -> list[dict]:
    """Per sequence: token_logprobs (None for the first token, then log p(token | before)) and,
    with top > 0, top_logprobs ({token text: log-prob} of the `top` likeliest, None first)."""
    model.eval()
    device = next(model.parameters()).device
    out: list[dict] = []
    for s in range(0, len(seqs), SCORE_ROWS):
        rows = seqs[s : s + SCORE_ROWS]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), tok.pad_token_id or 0, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, : len(r)] = 1
        pos = torch.arange(width).expand(len(rows), width)
        h = hidden_states(model, {"input_ids": ids.to(device), "attention_mask": mask.to(device), "position_ids": pos.to(device)})
        for i, r in enumerate(rows):
            out.append(_row_scores(model, tok, h[i], r, top))
    return out


def _row_scores(model, tok, h: torch.Tensor, row: list[int], top: int) -> dict:
    lps: list[float | None] = [None]
    tops: list[dict | None] = [None]
    target = torch.tensor(row[1:], dtype=torch.long, device=h.device)
    for c in range(0, len(row) - 1, SCORE_CHUNK):
        lp = torch.log_softmax(token_logits(model, h[c : min(c + SCORE_CHUNK, len(row) - 1)]), -1)  # predicts row[c+1 ...]
        lps += lp.gather(-1, target[c : c + lp.shape[0], None]).squeeze(-1).tolist()
        if top:
            values, idx = lp.topk(top, dim=-1)
            for v, ix in zip(values.tolist(), idx.tolist()):
                tops.append({tok.decode([t]): x for t, x in zip(ix, v)})
    return {"token_logprobs": lps, "top_logprobs": tops if top else None}
