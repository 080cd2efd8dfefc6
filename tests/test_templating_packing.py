"""Loss masks through the real chat template, packing layout, and the key property of
packing: packed and unpacked losses agree."""

from __future__ import annotations

import torch

from tunesmith.data.packing import collate, pack, unpacked
from tunesmith.data.templating import IGNORE, Example, encode_rows, preview, render_chat, render_text, to_messages


def _trained_text(tok, ex):
    return tok.decode([t for t, y in zip(ex.input_ids, ex.labels) if y != IGNORE])


def test_assistant_only_mask(default_tokenizer):
    tok = default_tokenizer
    msgs = to_messages({"prompt": "Where is the depot?", "completion": "Elvcombe", "system": None}, "prompt_completion", "Be brief.")
    ex = render_chat(tok, msgs)
    # Exactly the answer and its end-of-turn token are trained: the model learns to stop.
    assert _trained_text(tok, ex) == "Elvcombe<|im_end|>"
    assert msgs[0] == {"role": "system", "content": "Be brief."}
    assert "[[Elvcombe<|im_end|>]]" in preview(tok, ex)


def test_multi_turn_masks_every_assistant_turn(default_tokenizer):
    tok = default_tokenizer
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there"},
            {"role": "user", "content": "Price?"}, {"role": "assistant", "content": "12 crowns"}]
    assert _trained_text(tok, render_chat(tok, msgs, "assistant")) == "Hello there<|im_end|>12 crowns<|im_end|>"
    assert _trained_text(tok, render_chat(tok, msgs, "last")) == "12 crowns<|im_end|>"
    ex_all = render_chat(tok, msgs, "all")
    assert ex_all.n_trained == len(ex_all.input_ids)


def test_text_trains_every_token_and_ends_with_eos(default_tokenizer):
    ex = render_text(default_tokenizer, "The depot is in Elvcombe.")
    assert ex.labels == ex.input_ids and ex.input_ids[-1] == default_tokenizer.eos_token_id


def test_encode_truncates_without_losing_answers(default_tokenizer):
    rows = [{"prompt": "word " * 200, "completion": "yes", "system": None}, {"prompt": "Q", "completion": "A " * 50, "system": None}]
    exs, stats = encode_rows(rows, "prompt_completion", default_tokenizer, max_length=64)
    # The first would lose its whole answer to cutting the end: its prompt is cut instead (from
    # the start), so the answer is trained; the second keeps its prompt and some answer tokens.
    assert stats == {"n": 2, "truncated": 2, "prompt_cut": 1, "dropped": 0}
    assert [len(e.input_ids) for e in exs] == [64, 64]
    kept = default_tokenizer.decode([t for t, y in zip(exs[0].input_ids, exs[0].labels) if y != IGNORE])
    assert "yes" in kept and "word" in default_tokenizer.decode(exs[0].input_ids)


def test_pack_layout():
    exs = [Example([1] * n, [5] * n) for n in (6, 5, 4, 3, 2)]
    rows = pack(exs, max_length=10)
    assert sorted(len(r) for r in rows) == [10, 10]  # best fit: 6+4 and 5+3+2
    for r in rows:
        # positions restart at 0 for each document; its first token is never a target
        starts = [i for i, p in enumerate(r.position_ids) if p == 0]
        assert all(r.labels[i] == IGNORE for i in starts)
        assert len(starts) == len(set(r.seq_ids))
    b = collate(rows, pad_id=0)
    m = b["attention_mask"][0, 0]
    seq = torch.tensor(rows[0].seq_ids)
    # block-diagonal causal: attend iff same document and not in the future
    expected = (seq[:, None] == seq[None, :]) & torch.ones(10, 10, dtype=torch.bool).tril()
    assert torch.equal(m, expected)


def test_packed_and_unpacked_losses_agree(tiny_model_dir, default_tokenizer, demo_dir):
    from transformers import AutoModelForCausalLM

    from tunesmith.data.schemas import load_dataset
    from tunesmith.training.losses import causal_lm_loss

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa").eval()
    ds = load_dataset(demo_dir / "qa_train.jsonl")
    exs, _ = encode_rows(ds.rows()[:24], ds.type, default_tokenizer, max_length=256, system_prompt="Be brief.")

    def mean_loss(rows):
        b = collate(rows, default_tokenizer.pad_token_id)
        with torch.no_grad():
            s, n = causal_lm_loss(model, b)
        return float(s) / n, n

    packed_rows = pack(exs, 256)
    assert len(packed_rows) < len(exs) / 3  # really packed several per row
    lp, n_p = mean_loss(packed_rows)
    lu, n_u = mean_loss(unpacked(exs))
    assert n_p == n_u
    assert abs(lp - lu) < 1e-5, (lp, lu)
    # and a broken mask (attention across documents) would change the loss: the test can fail
    b = collate(packed_rows, default_tokenizer.pad_token_id)
    L = b["input_ids"].shape[1]
    b["attention_mask"] = torch.ones(L, L, dtype=torch.bool).tril()[None, None].expand(len(packed_rows), 1, L, L)
    with torch.no_grad():
        s, n = causal_lm_loss(model, b)
    assert abs(float(s) / n - lu) > 1e-4


def test_fallback_template_for_models_without_one(default_tokenizer, tmp_path):
    """A base model with no chat template gets ours; the answer's first token (which may carry
    the preceding separator) is still trained, and generation prompts end where answers start."""
    from transformers import AutoTokenizer

    from tunesmith.data.templating import prompt_text
    from tunesmith.models.loading import prepare_tokenizer

    default_tokenizer.save_pretrained(tmp_path)
    (tmp_path / "chat_template.jinja").unlink()
    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert not tok.chat_template
    tok = prepare_tokenizer(tok)
    msgs = [{"role": "user", "content": "Where is the depot?"}, {"role": "assistant", "content": "Elvcombe"}]
    ex = render_chat(tok, msgs)
    assert _trained_text(tok, ex) == "Elvcombe" + tok.eos_token
    full = tok.apply_chat_template(msgs, tokenize=False)
    assert full.startswith(prompt_text(tok, msgs[:1])) and prompt_text(tok, msgs[:1]).endswith("\n")
