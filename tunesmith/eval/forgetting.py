"""How much general ability a fine-tuned model kept: perplexity on general text and accuracy
on a general-knowledge multiple-choice probe, for the model and (optionally) its base model.

Both sets ship with the package (tunesmith/resources): ~40 paragraphs of everyday factual
prose and 60 easy four-way questions. A domain fine-tune that raises the perplexity of plain
prose, or loses probe questions the base model got right, has "forgotten" something.

Probe format (cloze, lm-evaluation-harness style): each choice is scored as the continuation
of the plain text "Question: <question>\nAnswer:" (the choice after one space), by the sum
of its tokens' log-probabilities, and the likeliest choice is the model's answer. We do not
list lettered choices and score "A".."D": models of ~100M parameters cannot do that format.
Nor do we go through the chat template by default: the default model (SmolLM2-135M-Instruct,
4-bit GGUF) scored 68% on the shipped probe in plain form but 45% when each choice was the
whole assistant turn (its answers are sentences, so a bare word is unlikely there), and
lettered choices scored 23%. A probe the base model does well leaves room to show forgetting.
`fmt="chat"` scores through the chat template instead (`eval.likelihood.option_logprobs`).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F

from tunesmith.data.packing import collate, unpacked
from tunesmith.data.templating import IGNORE, Example, render_text
from tunesmith.errors import TunesmithError
from tunesmith.eval.likelihood import option_logprobs
from tunesmith.eval.stats import bootstrap_ci, paired_bootstrap
from tunesmith.training.losses import hidden_states, token_logits

# Output-layer rows computed at once: (chunk, V) float32 logits, V ~ 49k -> ~200 MB at 1024,
# whatever the batch size and text length.
_LOGIT_CHUNK = 1024


@contextmanager
def _eval_mode(model) -> Iterator[None]:
    """model.eval() and no gradients, restoring train mode after (callable mid-training)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _row_nll(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token NLL of each row's trained tokens (B,) and their count (B,)."""
    h = hidden_states(model, batch)  # (B, L, H)
    targets = batch["labels"][:, 1:]  # (B, L-1): token t+1 is predicted at position t
    sel = targets != IGNORE  # (B, L-1)
    h_sel, y_sel = h[:, :-1][sel], targets[sel]  # (N, H), (N,), row-major order
    rows = sel.nonzero()[:, 0]  # (N,) the row of each selected target, same order
    nll = torch.cat([
        F.cross_entropy(token_logits(model, h_sel[s : s + _LOGIT_CHUNK]), y_sel[s : s + _LOGIT_CHUNK], reduction="none")
        for s in range(0, len(y_sel), _LOGIT_CHUNK)
    ]) if len(y_sel) else h.new_zeros(0)
    B = targets.shape[0]
    sums = torch.zeros(B, dtype=torch.float64, device=nll.device).index_add(0, rows, nll.double())
    return sums.cpu(), sel.sum(1).cpu()


def perplexity(model, tok, texts: list[str], *, batch_size: int = 8, max_length: int = 512) -> dict:
    """Token-level perplexity of plain texts: exp(total NLL / total predicted tokens).

    Each text is tokenized as a document (`render_text`: BOS if the tokenizer adds one, EOS
    appended) and cut to `max_length` tokens; every token but the first is predicted. Returns
    {"perplexity", "n_tokens", "nll_per_item": mean NLL per token of each text,
    "n_tokens_per_item"}; texts are weighted by their token counts in "perplexity".
    """
    if not texts:
        raise TunesmithError("perplexity needs at least one text")
    examples = []
    for i, t in enumerate(texts):
        ex = render_text(tok, t)
        if len(ex.input_ids) > max_length:
            ex = Example(ex.input_ids[:max_length], ex.labels[:max_length])
        if len(ex.input_ids) < 2:
            raise TunesmithError(f"perplexity: text {i} is empty (nothing to predict)")
        examples.append(ex)
    rows = unpacked(examples)
    # Sort by length so that batches carry little padding; results go back by index.
    order = sorted(range(len(rows)), key=lambda k: len(rows[k]))
    nll_sum, n_tok = [0.0] * len(rows), [0] * len(rows)
    device = next(model.parameters()).device
    with _eval_mode(model):
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            batch = {k: v.to(device) for k, v in collate([rows[k] for k in idx], tok.pad_token_id).items()}
            sums, counts = _row_nll(model, batch)
            for k, v, c in zip(idx, sums.tolist(), counts.tolist()):
                nll_sum[k], n_tok[k] = v, int(c)
    total = sum(n_tok)
    return {
        "perplexity": math.exp(sum(nll_sum) / total),
        "n_tokens": total,
        "nll_per_item": [v / c for v, c in zip(nll_sum, n_tok)],
        "n_tokens_per_item": n_tok,
    }


def _check_items(items: list[dict]) -> None:
    if not items:
        raise TunesmithError("probe_accuracy needs at least one item")
    for i, it in enumerate(items):
        choices, ans = it.get("choices"), it.get("answer")
        if not it.get("question") or not isinstance(choices, list) or len(choices) < 2:
            raise TunesmithError(f"probe item {it.get('id', i)}: needs a question and at least two choices")
        if not isinstance(ans, int) or not 0 <= ans < len(choices):
            raise TunesmithError(f"probe item {it.get('id', i)}: answer must be an index into choices (0..{len(choices) - 1}), got {ans!r}")


def plain_option_logprobs(model, tok, prompts: list[str], options: list[list[str]], *,
                          batch_size: int = 16) -> list[list[float]]:
    """Summed log-probability of each option as the continuation of its plain-text prompt
    (no chat template); the option follows the prompt after one space."""
    examples, pairs = [], []
    for i, (prompt, opts) in enumerate(zip(prompts, options)):
        head = list(tok(prompt)["input_ids"])  # BOS where the tokenizer's model expects one
        for j, opt in enumerate(opts):
            # Tokenized apart from the prompt, so every option of an item shares the same context.
            ids = list(tok(" " + opt, add_special_tokens=False)["input_ids"])
            examples.append(Example(head + ids, [IGNORE] * len(head) + ids))
            pairs.append((i, j))
    rows = unpacked(examples)
    order = sorted(range(len(rows)), key=lambda k: len(rows[k]))
    out: list[list[float]] = [[0.0] * len(o) for o in options]
    device = next(model.parameters()).device
    with _eval_mode(model):
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            batch = {k: v.to(device) for k, v in collate([rows[k] for k in idx], tok.pad_token_id).items()}
            sums, _ = _row_nll(model, batch)
            for k, v in zip(idx, sums.tolist()):
                i, j = pairs[k]
                out[i][j] = -v
    return out


def probe_accuracy(model, tok, items: list[dict] | None = None, *, system: str | None = None,
                   fmt: str = "plain", batch_size: int = 16) -> dict:
    """Multiple-choice accuracy by log-likelihood (see the module docstring for the format).

    `items` default to the shipped general probe. fmt="plain" scores "Question: ...\nAnswer:
    <choice>", after `system` as a first paragraph if given; fmt="chat" scores each choice as
    the assistant's answer to the question, after `system` as the system turn (else the
    template's default one). Returns {"accuracy", "per_item": [0/1], "chosen": [index picked
    per item], "n"}.
    """
    if items is None:
        from tunesmith.resources import load_resource

        items = load_resource("general_probe")
    _check_items(items)
    options = [list(it["choices"]) for it in items]
    if fmt == "plain":
        prompts = [(f"{system}\n\n" if system else "") + f"Question: {it['question']}\nAnswer:" for it in items]
        scores = plain_option_logprobs(model, tok, prompts, options, batch_size=batch_size)
    elif fmt == "chat":
        head = [{"role": "system", "content": system}] if system else []
        convs = [head + [{"role": "user", "content": it["question"]}] for it in items]
        with _eval_mode(model):
            scores = option_logprobs(model, tok, convs, options, batch_size=batch_size)
    else:
        raise TunesmithError(f"probe format '{fmt}': expected plain or chat")
    chosen = [max(range(len(sc)), key=lambda j: sc[j]) for sc in scores]
    per_item = [int(c == it["answer"]) for c, it in zip(chosen, items)]
    return {"accuracy": sum(per_item) / len(per_item), "per_item": per_item, "chosen": chosen, "n": len(items)}


def _token_weighted_nll(pairs: list[tuple[float, int]]) -> float:
    """Mean NLL per token over (mean NLL, token count) items: log of their perplexity."""
    return sum(m * n for m, n in pairs) / sum(n for _, n in pairs)


def _evaluate(spec: str, texts: list[str], items: list[dict], system: str | None, fmt: str) -> dict:
    from tunesmith.models.loading import inference_device, load_model

    model, tok, _ = load_model(spec, device=inference_device())
    ppl = perplexity(model, tok, texts)
    probe = probe_accuracy(model, tok, items, system=system, fmt=fmt)
    del model  # free it before a caller loads the base model
    pairs = list(zip(ppl["nll_per_item"], ppl["n_tokens_per_item"]))
    # CI of the token-weighted perplexity, resampling texts (the unit that was sampled).
    ci = bootstrap_ci(pairs, statistic=lambda ps: math.exp(_token_weighted_nll(ps)))
    acc = bootstrap_ci(probe["per_item"])
    return {
        "spec": str(spec),
        "perplexity": ppl["perplexity"],
        "perplexity_ci": {"low": ci["low"], "high": ci["high"], "n": ci["n"]},
        "n_tokens": ppl["n_tokens"],
        "probe_accuracy": probe["accuracy"],
        "probe_accuracy_ci": {"low": acc["low"], "high": acc["high"], "n": acc["n"]},
        "nll_per_item": ppl["nll_per_item"],
        "n_tokens_per_item": ppl["n_tokens_per_item"],
        "probe_per_item": probe["per_item"],
    }


def _drop(model: dict, base: dict) -> dict:
    """Forgetting of `model` relative to `base`, with paired-bootstrap CIs over the same items."""
    pm = list(zip(model["nll_per_item"], model["n_tokens_per_item"]))
    pb = list(zip(base["nll_per_item"], base["n_tokens_per_item"]))
    # diff = logNLL(model) - logNLL(base) = log(ppl_model / ppl_base), so exp(.) - 1 is the ratio - 1.
    d = paired_bootstrap(pb, pm, statistic=_token_weighted_nll)
    acc = paired_bootstrap(model["probe_per_item"], base["probe_per_item"])  # base - model
    return {
        "perplexity_increase": model["perplexity"] / base["perplexity"] - 1.0,
        "perplexity_increase_ci": {"low": math.exp(d["low"]) - 1.0, "high": math.exp(d["high"]) - 1.0,
                                   "p_value": d["p_value"]},
        "probe_accuracy_drop": base["probe_accuracy"] - model["probe_accuracy"],
        "probe_accuracy_drop_ci": {"low": acc["low"], "high": acc["high"], "p_value": acc["p_value"]},
    }


def general_ability(model_spec: str, *, base_spec: str | None = None, texts: list[str] | None = None,
                    items: list[dict] | None = None, system: str | None = None, fmt: str = "plain") -> dict:
    """Perplexity on general text and general-probe accuracy of a model, and of its base.

    `model_spec`/`base_spec` are anything `load_model` takes (built-in name, HF dir, run dir).
    `texts`/`items` default to the shipped general text and probe; `system`/`fmt` are passed
    to `probe_accuracy`. Returns {"model": {...}, "base": {...} or None, "drop": {...} or
    None}; each side has perplexity (+ CI), probe accuracy (+ CI), token counts and per-item
    results; "drop" has "perplexity_increase" (ppl_model / ppl_base - 1) and
    "probe_accuracy_drop" (base - model), each with a 95% paired-bootstrap CI and p-value.
    Positive numbers mean the model lost ability.
    """
    from tunesmith.resources import load_resource

    texts = texts if texts is not None else [r["text"] for r in load_resource("general_text")]
    items = items if items is not None else load_resource("general_probe")
    out: dict = {"model": _evaluate(model_spec, texts, items, system, fmt), "base": None, "drop": None}
    if base_spec is not None:
        out["base"] = _evaluate(base_spec, texts, items, system, fmt)
        out["drop"] = _drop(out["model"], out["base"])
    return out
