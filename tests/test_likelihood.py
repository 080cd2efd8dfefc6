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
