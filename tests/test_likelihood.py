"""Option scoring by log-likelihood against a direct computation from full logits."""

import torch

from tunesmith.data.templating import render_chat
from tunesmith.eval.likelihood import option_logprobs, pick


def test_option_logprobs_match_full_forward(tiny_model_dir, default_tokenizer):
    from transformers import AutoModelForCausalLM

    tok = default_tokenizer
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    convs = [[{"role": "user", "content": "Sentiment of: great film"}], [{"role": "user", "content": "Which colour?"}]]
    options = [["positive", "negative"], ["charcoal", "lemon yellow", "red"]]
    got = option_logprobs(model, tok, convs, options, batch_size=2)
    for i, opts in enumerate(options):
        for j, opt in enumerate(opts):
            ex = render_chat(tok, convs[i] + [{"role": "assistant", "content": opt}], loss_on="last")
            ids = torch.tensor([ex.input_ids])
            with torch.no_grad():
                logp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
            want = sum(logp[t - 1, y].item() for t, y in enumerate(ex.labels) if y != -100 and t > 0)
            assert abs(got[i][j] - want) < 1e-3, (opt, got[i][j], want)
    assert pick(options, [[-1.0, -2.0], [-5.0, -1.0, -3.0]]) == ["positive", "lemon yellow"]


def _direct(model, tok, conv, opt):
    ex = render_chat(tok, conv + [{"role": "assistant", "content": opt}], loss_on="last")
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ex.input_ids])).logits[0, :-1].float(), -1)
    return sum(logp[t - 1, y].item() for t, y in enumerate(ex.labels) if y != -100 and t > 0), ex.n_trained


def test_shared_prompt_rows_in_padded_batches_and_normalised(tiny_model_dir, default_tokenizer):
    """Several conversations of different lengths per batch (padding), 1-4 options each, one row
    per conversation: every score equals prompt + option scored alone."""
    from transformers import AutoModelForCausalLM

    tok = default_tokenizer
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    convs = [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Is this long review " + "very " * 40 + "positive?"}],
             [{"role": "user", "content": "yes or no?"}],
             [{"role": "user", "content": "Pick"}, {"role": "assistant", "content": "a"}, {"role": "user", "content": "again"}],
             [{"role": "user", "content": "One option only"}]]
    options = [["yes", "no", "maybe", "it depends on the reviewer"], ["yes", "no"], ["a", "b", "c d e"], ["only"]]
    for normalize in (False, True):
        got = option_logprobs(model, tok, convs, options, batch_size=3, normalize=normalize)
        for i, opts in enumerate(options):
            for j, opt in enumerate(opts):
                want, n = _direct(model, tok, convs[i], opt)
                assert abs(got[i][j] - (want / n if normalize else want)) < 1e-3, (i, opt)


def test_options_without_a_common_prompt_prefix_get_their_own_blocks(tiny_model_dir, default_tokenizer):
    """When the rendered options do not share the prompt's tokens, each is its own block."""
    from transformers import AutoModelForCausalLM

    from tunesmith.eval.likelihood import _collate_shared, _shared_row, _sum_by
    from tunesmith.training.losses import hidden_states, token_logits

    tok = default_tokenizer
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    pairs = [([{"role": "user", "content": "first prompt"}], "yes"), ([{"role": "user", "content": "a different, longer prompt"}], "no")]
    row = _shared_row([render_chat(tok, c + [{"role": "assistant", "content": o}], loss_on="last") for c, o in pairs])
    assert -1 not in row.block  # no shared prompt
    batch, pred_at, targets, owner = _collate_shared([row], tok.pad_token_id, "cpu")
    with torch.no_grad():
        h = hidden_states(model, batch)
        lp = torch.log_softmax(token_logits(model, h[pred_at[:, 0], pred_at[:, 1]]), -1).gather(-1, targets[:, None]).squeeze(-1)
    sums = _sum_by(owner, lp)
    for j, (c, o) in enumerate(pairs):
        assert abs(sums[(0, j)] - _direct(model, tok, c, o)[0]) < 1e-3
