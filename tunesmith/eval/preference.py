"""Preference accuracy: how often a model prefers the chosen answer of a held-out pair.

Each pair (prompt, chosen, rejected) is rendered twice through the chat template, prompt +
chosen and prompt + rejected, with the answer as the last assistant turn; the summed
log-probability of the answer's tokens (and its end-of-turn token) scores it. A pair counts
as preferred when

- policy only: log p(chosen) > log p(rejected), or
- with a reference model (the DPO implicit reward): (log p(chosen) - log ref(chosen)) >
  (log p(rejected) - log ref(rejected)), i.e. the model moved towards the chosen answer
  relative to where the reference stood.

This is how "DPO raises the preference accuracy on held-out pairs" is measured: the base
model and the DPO run on the same file, compared per item (`scores` feed
`eval.stats.paired_bootstrap` or `mcnemar`).

The encoding and batched scoring here are shared with the dpo regimen (pure functions).
"""

from __future__ import annotations

import torch

from tunesmith.data.packing import Row, collate, unpacked
from tunesmith.data.templating import IGNORE, Example, fit_length, render_chat, to_messages
from tunesmith.errors import TunesmithError

Pair = tuple[Example, Example]  # (prompt + chosen, prompt + rejected)


def n_targets(ex: Example) -> int:
    """Trained tokens of an example after the next-token shift (its first token never is one)."""
    return sum(1 for y in ex.labels[1:] if y != IGNORE)


def encode_pairs(rows: list[dict], tok, *, max_length: int | None = None,
                 system_prompt: str | None = None) -> tuple[list[Pair], list[int], dict]:
    """Render preference records into (chosen, rejected) examples; only the answer is trained.

    Returns (pairs, kept, stats): `kept[k]` is the index in `rows` of pairs[k]. Examples longer
    than `max_length` are cut as `fit_length` cuts them (the prompt's start when the answer
    would not fit); a pair is dropped when either side has no answer token left.
    stats = {"n", "truncated", "prompt_cut", "dropped"} as for `encode_rows`.
    """
    pairs, kept, stats = [], [], {"n": len(rows), "truncated": 0, "prompt_cut": 0, "dropped": 0}
    for i, row in enumerate(rows):
        msgs = to_messages(row, "preference", system_prompt)
        sides, cut, prompt_cut = [], False, False
        for answer in (row["chosen"], row["rejected"]):
            ex = render_chat(tok, msgs + [{"role": "assistant", "content": answer}], loss_on="last")
            if max_length is not None and len(ex.input_ids) > max_length:
                cut = True
                ex, cut_prompt = fit_length(ex, max_length)  # keeps the answer (cuts the prompt's start)
                prompt_cut = prompt_cut or cut_prompt
            sides.append(ex)
        stats["truncated"] += int(cut)
        stats["prompt_cut"] += int(prompt_cut)
        if min(n_targets(sides[0]), n_targets(sides[1])) < 1:
            stats["dropped"] += 1
            continue
        pairs.append((sides[0], sides[1]))
        kept.append(i)
    return pairs, kept, stats


def pair_rows(pairs: list[Pair]) -> tuple[list[Row], list[Row]]:
    """One unpacked row per example: (chosen rows, rejected rows), aligned with `pairs`."""
    return unpacked([c for c, _ in pairs]), unpacked([r for _, r in pairs])


def pair_lengths(pairs: list[Pair]) -> tuple[torch.Tensor, torch.Tensor]:
    """Trained-token counts (N,) of the chosen and rejected answers (SimPO / IPO lengths)."""
    return (torch.tensor([float(n_targets(c)) for c, _ in pairs]),
            torch.tensor([float(n_targets(r)) for _, r in pairs]))


def pair_batch(chosen: list[Row], rejected: list[Row], idx: list[int], pad_id: int) -> dict:
    """A collated batch of 2B rows: the chosen answers of pairs `idx`, then their rejected ones."""
    return collate([chosen[i] for i in idx] + [rejected[i] for i in idx], pad_id)


@torch.no_grad()
def pair_logprobs(model, pairs: list[Pair], *, pad_id: int, batch_size: int = 16,
                  precision: str = "fp32", progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed answer log-probs (N,) of the chosen and rejected sides of each pair (float32, CPU).

    The model runs in eval mode (no dropout) and is put back in its previous mode. Pairs are
    scored in length order to keep padding small; results come back in the pairs' order.
    """
    from tunesmith.training.losses import sequence_logprobs
    from tunesmith.training.runtime import autocast, to_device

    n = len(pairs)
    out_c, out_r = torch.zeros(n), torch.zeros(n)
    if n == 0:
        return out_c, out_r
    chosen, rejected = pair_rows(pairs)
    device = next(model.parameters()).device
    order = sorted(range(n), key=lambda k: (max(len(chosen[k]), len(rejected[k])), k))
    from tqdm.auto import tqdm

    was_training = model.training
    model.eval()
    bar = tqdm(total=n, unit="pair", desc="score pairs", disable=not progress)
    try:
        for s in range(0, n, batch_size):
            idx = order[s : s + batch_size]
            with autocast(device, precision):
                lp = sequence_logprobs(model, to_device(pair_batch(chosen, rejected, idx, pad_id), device))
            lp = lp.detach().float().cpu()
            t = torch.tensor(idx)
            out_c[t], out_r[t] = lp[: len(idx)], lp[len(idx) :]
            bar.update(len(idx))
    finally:
        bar.close()
        model.train(was_training)
    return out_c, out_r


def _score(spec: str, pairs_rows: list[dict], system: str | None, batch_size: int, progress: bool = False):
    from tunesmith.models.loading import inference_device, load_model

    model, tok, _ = load_model(spec, device=inference_device())
    pairs, kept, _ = encode_pairs(pairs_rows, tok, system_prompt=system)
    if len(kept) != len(pairs_rows):
        raise TunesmithError(f"{spec}: {len(pairs_rows) - len(kept)} pairs have no answer tokens after rendering")
    lc, lr = pair_logprobs(model, pairs, pad_id=tok.pad_token_id, batch_size=batch_size, progress=progress)
    del model
    return lc, lr


def preference_accuracy(model_spec: str, data_path: str, *, system: str | None = None, limit: int | None = None,
                        ref_spec: str | None = None, batch_size: int = 16, n_resamples: int = 1000,
                        seed: int = 0, progress: bool = False) -> dict:
    """Share of preference pairs in `data_path` the model gets right, with a 95% bootstrap CI.

    model_spec / ref_spec: anything `load_model` takes (built-in name, HF directory, run
    directory). Without `ref_spec` a pair is right when the model's log-prob of the chosen
    answer exceeds the rejected one's; with it, when the DPO implicit-reward margin
    (policy - reference log-prob of chosen) - (policy - reference log-prob of rejected) is > 0.
    `system`: a system prompt added to pairs without one, the same for both models; pass the
    run's data.system_prompt to score a run as it was trained (and the same to its base).
    `limit`: only the first N pairs. Ties count as wrong. `progress`: a bar over the pairs.

    Returns {"accuracy", "low", "high", "n", "scores" (0/1 per pair), "margins" (per pair),
    "mean_margin", "model", "ref", "system"}.
    """
    from tunesmith.data.schemas import load_dataset
    from tunesmith.eval.stats import bootstrap_ci

    rows = load_dataset(data_path, accept=("preference",)).rows()
    if limit is not None:
        rows = rows[:limit]
    if not rows:
        raise TunesmithError(f"{data_path}: no preference pairs to score")
    pc, pr = _score(model_spec, rows, system, batch_size, progress)
    margins = pc.double() - pr.double()
    if ref_spec is not None:
        rc, rr = _score(ref_spec, rows, system, batch_size, progress)
        margins = margins - (rc.double() - rr.double())
    scores = [int(m > 0) for m in margins.tolist()]
    ci = bootstrap_ci(scores, n_resamples=n_resamples, seed=seed)
    return {"accuracy": ci["value"], "low": ci["low"], "high": ci["high"], "n": ci["n"], "scores": scores,
            "margins": margins.tolist(), "mean_margin": float(margins.mean()), "model": str(model_spec),
            "ref": str(ref_spec) if ref_spec is not None else None, "system": system}
