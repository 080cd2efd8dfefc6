"""Preference pairs built from a reward signal (tunesmith.pairs, `tunesmith data pairs`), with
the tiny model: the best and worst sampled answers by reward, ties skipped, DPO-ready output,
and a run interrupted mid-way that continues to the same file as an uninterrupted one."""

from __future__ import annotations

import json
import sys

import pytest

from tunesmith.data.schemas import load_dataset
from tunesmith.errors import TunesmithError
from tunesmith.pairs import build_pairs, choose_pair

REWARD = """
CALLS = []
FAIL_ON_CALL = None
def chars(prompts, completions, **columns):
    CALLS.append(len(completions))
    if FAIL_ON_CALL is not None and len(CALLS) == FAIL_ON_CALL:
        raise RuntimeError("killed")
    return [float(len(c)) for c in completions]
def same(prompts, completions, **columns):
    return [1.0] * len(completions)
"""


@pytest.fixture
def reward_mod(tmp_path, monkeypatch):
    (tmp_path / "pair_rewards.py").write_text(REWARD)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "pair_rewards", raising=False)
    import pair_rewards

    return pair_rewards


def test_choose_pair_by_hand():
    assert choose_pair(["a", "bb", "c"], [0.0, 2.0, -1.0]) == (1, 2)
    assert choose_pair(["a", "b"], [1.0, 1.0]) is None                 # no preference
    assert choose_pair(["a", "b"], [1.0, 1.5], min_gap=0.5) is None    # gap not above min_gap
    assert choose_pair(["same", "same "], [0.0, 1.0]) is None           # the same answer twice
    assert choose_pair(["x", "y", "z"], [1.0, 1.0, 0.0]) == (0, 2)     # ties: the earliest sample


def test_pairs_are_best_and_worst_by_reward_and_train_dpo(tmp_path, tiny_model_dir, demo_dir, reward_mod):
    out = tmp_path / "pairs.jsonl"
    r = build_pairs(str(tiny_model_dir), demo_dir / "qa_train.jsonl", out, {"pair_rewards:chars": 1.0}, n_samples=3,
                    max_new_tokens=6, limit=10, batch_prompts=4, progress=False)
    pairs = [json.loads(x) for x in out.read_text().splitlines()]
    assert r["prompts"] == 10 and r["pairs"] == len(pairs) == 10 - r["no_preference"] and r["pairs"] > 0
    assert all(p["chosen_reward"] == len(p["chosen"]) > p["rejected_reward"] == len(p["rejected"]) for p in pairs)
    prompts = [json.loads(x)["prompt"] for x in (demo_dir / "qa_train.jsonl").read_text().splitlines()][:10]
    assert all(p["prompt"] in prompts for p in pairs)
    assert load_dataset(out).type == "preference"
    assert not (tmp_path / "pairs.jsonl.partial").exists()

    # a reward that never prefers one answer gives no pair
    r = build_pairs(str(tiny_model_dir), demo_dir / "qa_train.jsonl", tmp_path / "none.jsonl", {"pair_rewards:same": 1.0},
                    n_samples=2, max_new_tokens=4, limit=4, progress=False)
    assert r["pairs"] == 0 and r["no_preference"] == 4


def test_interrupted_run_continues_to_the_same_pairs(tmp_path, tiny_model_dir, demo_dir, reward_mod):
    kw = dict(n_samples=3, max_new_tokens=6, limit=9, batch_prompts=3, progress=False, seed=1)
    full = tmp_path / "full.jsonl"
    build_pairs(str(tiny_model_dir), demo_dir / "qa_train.jsonl", full, {"pair_rewards:chars": 1.0}, **kw)

    out = tmp_path / "cut.jsonl"
    reward_mod.FAIL_ON_CALL = len(reward_mod.CALLS) + 3  # the third batch fails, as a kill would stop it
    with pytest.raises(TunesmithError, match="killed"):
        build_pairs(str(tiny_model_dir), demo_dir / "qa_train.jsonl", out, {"pair_rewards:chars": 1.0}, **kw)
    assert not out.exists() and (tmp_path / "cut.jsonl.partial").exists()  # nothing half-written
    reward_mod.FAIL_ON_CALL = None
    calls = len(reward_mod.CALLS)
    r = build_pairs(str(tiny_model_dir), demo_dir / "qa_train.jsonl", out, {"pair_rewards:chars": 1.0}, **kw)
    assert r["resumed_prompts"] == 6 and len(reward_mod.CALLS) - calls == 1  # only the last batch is sampled again
    assert out.read_text() == full.read_text()


def test_bad_rewards_or_data_fail_before_the_model_loads(tmp_path, demo_dir):
    with pytest.raises(TunesmithError, match="no_such_reward"):
        build_pairs("/nonexistent/model", demo_dir / "qa_train.jsonl", tmp_path / "p.jsonl", {"no_such_reward": 1.0}, progress=False)
    with pytest.raises(TunesmithError):
        build_pairs("/nonexistent/model", demo_dir / "pref_train.jsonl", tmp_path / "p.jsonl", {"exact_match": 1.0}, progress=False)
    with pytest.raises(TunesmithError, match="at least 2"):
        build_pairs("/nonexistent/model", demo_dir / "qa_train.jsonl", tmp_path / "p.jsonl", {"exact_match": 1.0}, n_samples=1)


def test_cli_writes_pairs_and_reports(tmp_path, tiny_model_dir, demo_dir, reward_mod, capsys):
    from tunesmith.cli import main

    out = tmp_path / "cli.jsonl"
    rc = main(["data", "pairs", str(demo_dir / "qa_train.jsonl"), "--model", str(tiny_model_dir), "--out", str(out),
               "--reward", "pair_rewards:chars=2", "--samples", "2", "--max-new-tokens", "4", "--limit", "3", "--quiet"])
    text = capsys.readouterr().out
    assert rc == 0 and "pairs from 3 prompts" in text and out.exists()
    assert all(p["chosen_reward"] == 2 * len(p["chosen"]) for p in map(json.loads, out.read_text().splitlines()))
    assert main(["data", "pairs", str(demo_dir / "qa_train.jsonl"), "--out", str(out), "--reward", "exact_match=x"]) == 2
