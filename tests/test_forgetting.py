"""General-ability measures against direct computations on a tiny random model, and checks of
the shipped general text and probe."""

import math
from collections import Counter

import pytest
import torch

from tunesmith.data.templating import IGNORE, render_chat, render_text
from tunesmith.errors import TunesmithError
from tunesmith.eval.forgetting import general_ability, perplexity, probe_accuracy
from tunesmith.resources import load_resource

TEXTS = ["The river flows north to the sea, past farms and small towns.", "Bread needs flour, water, salt and yeast."]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


def _direct_nll(model, ids: list[int]) -> tuple[float, int]:
    """Summed NLL of tokens 1.. of one sequence from a plain forward pass over full logits."""
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, :-1].float(), -1)  # (L-1, V)
    return -sum(logp[t, y].item() for t, y in enumerate(ids[1:])), len(ids) - 1


def _direct_option_score(model, tok, question: str, option: str, fmt: str) -> float:
    """Summed log-probability of the option's tokens, from one plain forward pass."""
    if fmt == "plain":
        head = tok(f"Question: {question}\nAnswer:")["input_ids"]
        opt = tok(" " + option, add_special_tokens=False)["input_ids"]
        ids, labels = head + opt, [IGNORE] * len(head) + opt
    else:
        msgs = [{"role": "user", "content": question}, {"role": "assistant", "content": option}]
        ex = render_chat(tok, msgs, loss_on="last")
        ids, labels = ex.input_ids, ex.labels
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, :-1].float(), -1)  # (L-1, V)
    return sum(logp[t - 1, y].item() for t, y in enumerate(labels) if y != IGNORE and t > 0)


def test_perplexity_matches_direct_forward(tiny, default_tokenizer):
    tok = default_tokenizer
    direct = [_direct_nll(tiny, render_text(tok, t).input_ids) for t in TEXTS]
    for bs in (1, 2):  # batched with padding must equal one by one
        got = perplexity(tiny, tok, TEXTS, batch_size=bs)
        want = math.exp(sum(s for s, _ in direct) / sum(n for _, n in direct))
        assert got["perplexity"] == pytest.approx(want, rel=1e-4)
        assert got["n_tokens"] == sum(n for _, n in direct)
        assert got["nll_per_item"] == pytest.approx([s / n for s, n in direct], rel=1e-4)
    short = perplexity(tiny, tok, TEXTS, max_length=5)
    assert short["n_tokens_per_item"] == [4, 4]
    with pytest.raises(TunesmithError):
        perplexity(tiny, tok, [])


@pytest.mark.parametrize("fmt", ["plain", "chat"])
def test_probe_accuracy_agrees_with_direct_choice(tiny, default_tokenizer, fmt):
    tok = default_tokenizer
    questions = ["What is the capital of France?", "How many legs does a spider have?", "What colour is grass?"]
    choices = [["Paris", "Rome", "Oslo", "Lima"], ["Eight", "Six", "Four", "Ten"], ["Green", "Red", "Blue", "White"]]
    picks = []
    for q, cs in zip(questions, choices):
        sc = [_direct_option_score(tiny, tok, q, c, fmt) for c in cs]
        picks.append(max(range(4), key=lambda j: sc[j]))
    # Items 0 and 1 name the tiny model's own pick as the answer, item 2 another choice.
    answers = [picks[0], picks[1], (picks[2] + 1) % 4]
    items = [{"id": f"t{i}", "question": q, "choices": cs, "answer": a}
             for i, (q, cs, a) in enumerate(zip(questions, choices, answers))]
    tiny.train()
    r = probe_accuracy(tiny, tok, items, fmt=fmt, batch_size=5)
    assert tiny.training  # the caller's mode is restored
    tiny.eval()
    assert r["chosen"] == picks and r["per_item"] == [1, 1, 0]
    assert r["accuracy"] == pytest.approx(2 / 3) and r["n"] == 3
    with pytest.raises(TunesmithError, match="answer must be an index"):
        probe_accuracy(tiny, tok, [{**items[0], "answer": 4}], fmt=fmt)


def test_shipped_general_text():
    rows = load_resource("general_text")
    assert 35 <= len(rows) <= 60
    assert len({r["id"] for r in rows}) == len(rows)
    assert len({r["topic"] for r in rows}) >= 8
    for r in rows:
        assert set(r) == {"id", "topic", "text"} and r["id"].startswith("gen-")
        assert 60 <= len(r["text"].split()) <= 120, r["id"]
    assert load_resource("general_text.jsonl") == rows
    with pytest.raises(TunesmithError, match="general_probe"):
        load_resource("no_such_file")


def test_shipped_probe_is_valid_and_balanced():
    items = load_resource("general_probe")
    assert 50 <= len(items) <= 80
    assert len({it["id"] for it in items}) == len(items)
    assert len({it["question"] for it in items}) == len(items)
    for it in items:
        assert set(it) == {"id", "question", "choices", "answer"}
        assert len(it["choices"]) == 4 and len(set(it["choices"])) == 4
        assert all(isinstance(c, str) and c.strip() for c in it["choices"])
        assert isinstance(it["answer"], int) and 0 <= it["answer"] < 4
    positions = Counter(it["answer"] for it in items)
    assert max(positions.values()) <= 0.4 * len(items) and len(positions) == 4


def test_general_ability_against_itself(tiny_model_dir):
    items = [{"id": "a", "question": "What is 2 + 2?", "choices": ["4", "5", "6", "3"], "answer": 0},
             {"id": "b", "question": "What colour is grass?", "choices": ["Red", "Green", "Blue", "White"], "answer": 1}]
    r = general_ability(str(tiny_model_dir), base_spec=str(tiny_model_dir), texts=TEXTS, items=items)
    m = r["model"]
    assert m["perplexity_ci"]["low"] <= m["perplexity"] <= m["perplexity_ci"]["high"]
    assert m["n_tokens"] == sum(m["n_tokens_per_item"]) and len(m["probe_per_item"]) == 2
    assert r["base"]["perplexity"] == pytest.approx(m["perplexity"])
    assert r["drop"]["perplexity_increase"] == pytest.approx(0.0, abs=1e-6)
    assert r["drop"]["probe_accuracy_drop"] == 0.0
    assert general_ability(str(tiny_model_dir), texts=TEXTS, items=items)["drop"] is None
