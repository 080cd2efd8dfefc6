"""Tests for tunesmith.eval.judge: the LLM judge against a real loopback OpenAI-protocol server.

No client code is patched: every request crosses HTTP to `openai_server.OpenAIStubServer`,
whose replies are deterministic (Score 5 iff the answer contains the reference).
"""

from __future__ import annotations

import dataclasses
import json
import socket

import pytest
from openai_server import ALWAYS, OpenAIStubServer

from tunesmith.configlib import from_dict
from tunesmith.errors import ConfigError, TunesmithError
from tunesmith.eval.judge import (Judge, JudgeConfig, JudgeResult, PairResult, parse_score,
                                  parse_winner, summarize)
from tunesmith.eval.rubrics import RUBRICS, render_messages

RIGHT = {"question": "What is the capital of France?", "answer": "It is Paris.", "reference": "Paris"}
WRONG = {"question": "What is the capital of France?", "answer": "It is Lyon.", "reference": "Paris"}


def make_judge(srv: OpenAIStubServer, tmp_path, **kw) -> Judge:
    kw = {"base_url": srv.base_url, "cache_dir": str(tmp_path / "cache"), "backoff_s": 0.01,
          "timeout_s": 5.0, "api_key_env": None, **kw}
    return Judge(JudgeConfig(**kw))


# ---------------------------------------------------------------- scoring


def test_scores_matching_and_non_matching_answers(tmp_path):
    with OpenAIStubServer() as srv:
        judge = make_judge(srv, tmp_path)
        right, wrong = judge.score([RIGHT, WRONG], rubric="correctness")
        body = srv.requests[0]["body"]
    assert (right.score, wrong.score) == (5.0, 1.0)
    assert right.error is None and not right.cached
    assert right.raw.endswith("Score: 5") and right.rationale == "The answer matches the reference."
    assert body["temperature"] == 0 and body["max_tokens"] == 256 and body["model"] == "judge"
    assert body["messages"][0]["role"] == "system" and "<reference>" in body["messages"][1]["content"]
    assert judge.stats["requests"] == 2 and judge.stats["failures"] == 0


def test_results_keep_input_order_and_identical_prompts_are_asked_once(tmp_path):
    items = [RIGHT if i % 3 else WRONG for i in range(12)]
    with OpenAIStubServer() as srv:
        results = make_judge(srv, tmp_path, concurrency=4).score(items, rubric="correctness")
        assert srv.count == 2
    assert [r.score for r in results] == [5.0 if i % 3 else 1.0 for i in range(12)]


def test_helpfulness_and_domain_rubrics_render_optional_fields():
    plain = render_messages(RUBRICS["helpfulness"], {"question": "q", "answer": "a"})[1]["content"]
    assert "<reference>" not in plain and "<domain>" not in plain and "{" not in plain
    dom = render_messages(RUBRICS["domain_adherence"], {"question": "q", "answer": "a",
                                                        "domain": "home brewing"})[1]["content"]
    assert "<domain>\nhome brewing\n</domain>" in dom and "Score: N" in dom


def test_api_key_header_sent_only_when_env_var_is_set(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNESMITH_TEST_JUDGE_KEY", "sk-test-123")
    with OpenAIStubServer() as srv:
        make_judge(srv, tmp_path, api_key_env="TUNESMITH_TEST_JUDGE_KEY").score([RIGHT])
        monkeypatch.delenv("TUNESMITH_TEST_JUDGE_KEY")
        make_judge(srv, tmp_path / "other", api_key_env="TUNESMITH_TEST_JUDGE_KEY").score([RIGHT])
        assert srv.auth_headers == ["Bearer sk-test-123", None]


# ---------------------------------------------------------------- cache


def test_second_identical_call_is_served_from_cache(tmp_path):
    with OpenAIStubServer() as srv:
        first = make_judge(srv, tmp_path).score([RIGHT, WRONG], rubric="correctness")
        assert srv.count == 2
        judge = make_judge(srv, tmp_path)  # a fresh judge: the cache is on disk
        again = judge.score([RIGHT, WRONG], rubric="correctness")
        assert srv.count == 2
    assert [r.score for r in again] == [r.score for r in first]
    assert all(r.cached for r in again) and judge.stats["cached"] == 2
    assert judge.stats["requests"] == 0
    files = sorted((tmp_path / "cache").glob("*.json"))
    assert len(files) == 2
    record = json.loads(files[0].read_text())
    assert record["rubric"] == "correctness" and record["reply"].startswith("The answer")


def test_cache_ignores_base_url_but_not_rubric_version(tmp_path):
    with OpenAIStubServer() as one:
        make_judge(one, tmp_path).score([RIGHT], rubric="correctness")
    with OpenAIStubServer() as two:  # another port, same model: a cache hit
        assert make_judge(two, tmp_path).score([RIGHT], rubric="correctness")[0].cached
        bumped = dataclasses.replace(RUBRICS["correctness"], version="2099-1-1")
        result = make_judge(two, tmp_path).score([RIGHT], rubric=bumped)[0]
        assert two.count == 1 and not result.cached and result.score == 5.0


def test_failures_are_not_cached(tmp_path):
    with OpenAIStubServer(fail_first=1, fail_status=400) as srv:
        assert make_judge(srv, tmp_path).score([RIGHT], rubric="correctness")[0].error
        assert make_judge(srv, tmp_path).score([RIGHT], rubric="correctness")[0].score == 5.0
        assert srv.count == 2


# ---------------------------------------------------------------- retries and failures


def test_two_server_errors_then_success(tmp_path):
    with OpenAIStubServer(fail_first=2) as srv:
        judge = make_judge(srv, tmp_path)
        (result,) = judge.score([RIGHT], rubric="correctness")
        assert srv.count == 3
    assert result.score == 5.0 and result.error is None
    assert judge.stats["retries"] == 2 and judge.stats["requests"] == 3 and judge.stats["failures"] == 0


def test_429_honours_retry_after(tmp_path):
    with OpenAIStubServer(fail_first=1, fail_status=429, retry_after="0") as srv:
        judge = make_judge(srv, tmp_path, backoff_s=30.0)  # would hang if Retry-After were ignored
        assert judge.score([RIGHT], rubric="correctness")[0].score == 5.0
    assert judge.stats["retries"] == 1


def test_persistent_500_is_a_counted_failure(tmp_path):
    with OpenAIStubServer(fail_first=ALWAYS) as srv:
        judge = make_judge(srv, tmp_path, max_retries=2)
        (bad,) = judge.score([RIGHT])
        assert srv.count == 3
    assert bad.score is None and "HTTP 500" in bad.error and "3 attempt" in bad.error
    assert judge.stats["failures"] == 1 and judge.stats["retries"] == 2


def test_400_is_not_retried(tmp_path):
    with OpenAIStubServer(fail_first=ALWAYS, fail_status=400) as srv:
        judge = make_judge(srv, tmp_path)
        (bad,) = judge.score([RIGHT])
        assert srv.count == 1
    assert bad.score is None and "HTTP 400" in bad.error and "injected failure" in bad.error
    assert judge.stats["retries"] == 0 and judge.stats["failures"] == 1


def test_timeouts_and_refused_connections_are_retried_then_fail(tmp_path):
    with OpenAIStubServer(delay_s=0.5) as srv:
        judge = make_judge(srv, tmp_path, timeout_s=0.1, max_retries=1)
        assert judge.score([RIGHT])[0].error.startswith("cannot reach")
        assert srv.count == 2
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    judge = Judge(JudgeConfig(base_url=f"http://127.0.0.1:{port}/v1", cache_dir=str(tmp_path),
                              backoff_s=0.01, max_retries=1))
    (bad,) = judge.score([RIGHT])
    assert bad.score is None and "cannot reach" in bad.error and judge.stats["retries"] == 1


def test_garbage_reply_is_a_counted_failure(tmp_path):
    with OpenAIStubServer(garbage_first=ALWAYS) as srv:
        judge = make_judge(srv, tmp_path)
        (bad,) = judge.score([RIGHT])
        assert srv.count == 2  # the reply, then one reminder
        reminder = srv.requests[1]["body"]["messages"]
    assert bad.score is None and "unparsable" in bad.error and bad.raw
    assert reminder[-2]["role"] == "assistant" and "Score: N" in reminder[-1]["content"]
    assert judge.stats["failures"] == 1


def test_one_garbage_reply_is_fixed_by_the_reminder(tmp_path):
    with OpenAIStubServer(garbage_first=1) as srv:
        judge = make_judge(srv, tmp_path)
        assert judge.score([RIGHT], rubric="correctness")[0].score == 5.0
    assert judge.stats["reprompts"] == 1 and judge.stats["failures"] == 0


# ---------------------------------------------------------------- pairwise


PAIR = {"question": "Capital of France?", "answer_a": "Paris, of course.", "answer_b": "Lyon.",
        "reference": "Paris"}


def test_pairwise_fair_judge_picks_the_right_answer(tmp_path):
    # A different question, so that its two prompts are not the first item's two reversed.
    swapped = {**PAIR, "question": "France's capital?", "answer_a": PAIR["answer_b"],
               "answer_b": PAIR["answer_a"]}
    with OpenAIStubServer() as srv:
        first, second = make_judge(srv, tmp_path).pairwise([PAIR, swapped])
        assert srv.count == 4  # each item asked in both orders
    assert (first.winner, first.votes) == ("a", ("a", "a"))
    assert (second.winner, second.votes) == ("b", ("b", "b"))


def test_pairwise_position_bias_cancels_to_a_tie(tmp_path):
    with OpenAIStubServer(prefer_a=True) as srv:
        (result,) = make_judge(srv, tmp_path).pairwise([PAIR])
    assert result.winner == "tie" and result.votes == ("a", "b") and result.error is None


def test_pairwise_failure_has_no_winner(tmp_path):
    with OpenAIStubServer(garbage_first=ALWAYS) as srv:
        judge = make_judge(srv, tmp_path)
        (result,) = judge.pairwise([PAIR])
    assert result.winner is None and "unparsable" in result.error
    assert judge.stats["failures"] == 1


# ---------------------------------------------------------------- summarize and parsing


def test_summarize_counts_failures():
    results = [JudgeResult(5.0, "", ""), JudgeResult(2.0, "", ""), JudgeResult(None, "", "", "HTTP 500")]
    assert summarize(results) == {"mean": 3.5, "n": 2, "n_failed": 1}
    assert summarize([JudgeResult(None, "", "", "x")]) == {"mean": None, "n": 0, "n_failed": 1}
    pairs = [PairResult("a", ("a", "a")), PairResult("tie", ("a", "b")),
             PairResult(None, (None, "a"), "x")]
    assert summarize(pairs) == {"a": 1, "b": 0, "tie": 1, "win_rate_a": 0.75, "n": 2, "n_failed": 1}


@pytest.mark.parametrize("text, score", [
    ("Good.\nScore: 4", 4.0), ("**Score:** 5/5", 5.0), ("Score: 2\nOn reflection:\nScore: 3", 3.0),
    ("Score: 3 out of 5.", 3.0), ("Final score: 2", 2.0), ("Score: 9", None), ("Score: -3", None),
    ("fine", None), ("", None),
])
def test_parse_score(text, score):
    if score is None:
        with pytest.raises(ValueError):
            parse_score(text, (1, 5))
    else:
        assert parse_score(text, (1, 5))[0] == score


def test_parse_winner():
    assert parse_winner("x\n**Winner:** tie.")[0] == "tie"
    assert parse_winner("Winner: Answer B")[0] == "b"
    with pytest.raises(ValueError):
        parse_winner("Winner: C")


# ---------------------------------------------------------------- configuration errors


def test_missing_base_url_says_how_to_configure():
    with pytest.raises(TunesmithError, match="base_url") as err:
        Judge(JudgeConfig())
    assert "\n" not in str(err.value) and "http://127.0.0.1:8000/v1" in str(err.value)


def test_bad_rubric_or_items_fail_before_any_request(tmp_path):
    with OpenAIStubServer() as srv:
        judge = make_judge(srv, tmp_path)
        with pytest.raises(TunesmithError, match="unknown judge rubric 'nope'"):
            judge.score([RIGHT], rubric="nope")
        with pytest.raises(TunesmithError, match="item 1: missing 'reference'"):
            judge.score([RIGHT, {"question": "q", "answer": "a"}], rubric="correctness")
        with pytest.raises(TunesmithError, match="pairwise rubric"):
            judge.score([RIGHT], rubric="pairwise_helpfulness")
        assert srv.count == 0


def test_config_is_a_typed_configlib_dataclass():
    cfg = from_dict(JudgeConfig, {"base_url": "http://h/v1", "concurrency": 2})
    assert cfg.concurrency == 2 and cfg.max_retries == 4 and cfg.backoff_s == 1.0
    with pytest.raises(ConfigError, match="concurrency"):
        from_dict(JudgeConfig, {"concurrency": 0})
