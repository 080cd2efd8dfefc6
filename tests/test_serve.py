"""`tunesmith serve` end to end over loopback with real clients: the official openai client, the
judge of `tunesmith eval --judge`, and lm-evaluation-harness's local-completions model. Served
answers must equal the evaluated ones (Answerer, the run's system prompt or recipe), batched
greedy answers must equal single ones, served log-probs must equal eval/likelihood.py's, and
every malformed request must get a 4xx JSON error."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tunesmith import api
from tunesmith.config import load_train_config

ROOT = Path(__file__).resolve().parents[1]
openai = pytest.importorskip("openai")
try:  # the HTTP client the installed openai package uses (httpx2 in openai 3, httpx before)
    import httpx2 as httpx
except ImportError:
    httpx = pytest.importorskip("httpx")

Q = ["Who designed the Vossel altimeter?", "What is the refund window?", "Where is the head office?",
     "How do I reset my password?", "Which payment methods are accepted?", "When is support open?"]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_serve_load", ROOT / "benchmarks" / "serve_load.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir, demo_dir):
    """Two tiny LoRA runs on one base, a few-shot prompt run and a head run (seconds each)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("serve-runs")
    common = [f"model.name={tiny_model_dir}", f"output_dir={out}", "training.warmup_ratio=0", "training.batch_size=4",
              "training.eval_every=100", "training.save_every=100", "data.max_length=64", "training.threads=1"]
    qa = [f"data.train={demo_dir / 'qa_train.jsonl'}", "data.system_prompt=Be brief."]
    for name, lr in (("lora-a", "3e-2"), ("lora-b", "1e-2")):
        api.train(load_train_config(None, [*common, *qa, f"name={name}", "adapter.mode=lora", "training.max_steps=3",
                                           f"training.learning_rate={lr}", f"seed={1 if name == 'lora-a' else 2}"]), progress=False)
    api.train(load_train_config(None, [*common, *qa, "name=prompt", "regimen=prompt", "prompting.shots=2",
                                       "prompting.template=Q: {question}"]), progress=False)
    api.train(load_train_config(None, [*common, "regimen=head", f"data.train={demo_dir / 'cls_train.jsonl'}", "name=head",
                                       "training.max_steps=4", "training.learning_rate=3e-3"]), progress=False)
    torch.set_num_threads(n)
    return {"tiny": str(tiny_model_dir), **{k: str(out / k) for k in ("lora-a", "lora-b", "prompt", "head")}}


@pytest.fixture(scope="module")
def server(runs):
    from tunesmith.serve import BackgroundServer, build

    # fp32: LoRA runs on one base share its weights (in bf16 each run is a merged copy)
    engine = build(list(runs.values()), list(runs), precision="fp32")
    with BackgroundServer(engine) as srv:
        srv.client = openai.OpenAI(base_url=srv.base_url, api_key="unused", max_retries=0, timeout=120)
        yield srv


def _ask(client, model, q, **kw):
    kw.setdefault("max_tokens", 6)
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": q}], temperature=0, **kw)
    return r.choices[0].message.content


def test_served_answers_equal_evaluated_and_lora_runs_share_the_base(server, runs):
    from tunesmith.answering import Answerer
    from tunesmith.generation import GenerationSettings

    assert {m.id for m in server.client.models.list().data} == set(runs)
    models = server.engine.models
    assert models["lora-a"].answerer.model is models["lora-b"].answerer.model is models["tiny"].answerer.model
    assert models["prompt"].answerer.model is models["tiny"].answerer.model  # a prompt run on the base: same weights
    settings = GenerationSettings(max_new_tokens=6)
    for name in ("lora-a", "lora-b", "prompt", "tiny"):
        expected = Answerer.load(runs[name], precision="fp32").answer(Q[:3], settings)
        assert [_ask(server.client, name, q) for q in Q[:3]] == expected, name
    # the prompt run's recipe shapes the request exactly as evaluation's messages
    from tunesmith.answering import Answering

    how = Answering.of(runs["prompt"])
    assert how.chat([{"role": "user", "content": Q[0]}]) == how.messages([Q[0]])[0]
    assert len(how.messages([Q[0]])[0]) == 6  # system, two shots, the templated question
    # the adapters really differ: a and b answer differently from each other or from the base somewhere
    scores = [server.client.completions.create(model=m, prompt=Q[0], max_tokens=0, echo=True, logprobs=0).choices[0].logprobs.token_logprobs[-1]
              for m in ("tiny", "lora-a", "lora-b")]
    assert len({round(s, 5) for s in scores}) == 3


def test_bf16_serving_merges_each_lora_run_and_answers_as_bf16_evaluation(runs):
    import torch

    from tunesmith.answering import Answerer
    from tunesmith.generation import GenerationSettings
    from tunesmith.serve import BackgroundServer, build

    engine = build([runs["lora-a"], runs["lora-b"]], ["lora-a", "lora-b"], precision="bf16")
    a, b = engine.models["lora-a"].answerer.model, engine.models["lora-b"].answerer.model
    assert a is not b and not hasattr(a, "peft_config")  # merged, one copy per run
    assert {p.dtype for p in a.parameters()} == {torch.bfloat16}
    settings = GenerationSettings(max_new_tokens=6)
    with BackgroundServer(engine) as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="unused", max_retries=0, timeout=120)
        for name in ("lora-a", "lora-b"):
            expected = Answerer.load(runs[name], precision="bf16").answer(Q[:3], settings)
            assert [_ask(client, name, q) for q in Q[:3]] == expected, name


def test_batched_greedy_equals_single_and_streaming_equals_plain(server):
    single = [_ask(server.client, "lora-a", q, max_tokens=8) for q in Q]
    before = server.engine.stats["max_batch_seen"]
    server.engine.stats["max_batch_seen"] = 0
    out = [None] * len(Q)
    gate = threading.Barrier(len(Q))

    def ask(i):
        gate.wait()
        out[i] = _ask(server.client, "lora-a", Q[i], max_tokens=8)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(Q))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert server.engine.stats["max_batch_seen"] > 1, "concurrent requests were never batched"
    server.engine.stats["max_batch_seen"] = max(before, server.engine.stats["max_batch_seen"])
    assert out == single
    stream = server.client.chat.completions.create(model="lora-a", messages=[{"role": "user", "content": Q[0]}], max_tokens=8,
                                                   temperature=0, stream=True)
    chunks = list(stream)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert "".join(c.choices[0].delta.content or "" for c in chunks).strip() == single[0]


def test_sampling_n_seed_and_stop(server):
    kw = dict(model="lora-a", messages=[{"role": "user", "content": Q[1]}], max_tokens=8, temperature=1.0, seed=7, n=3)
    a = server.client.chat.completions.create(**kw)
    b = server.client.chat.completions.create(**kw)
    assert len(a.choices) == 3 and [c.message.content for c in a.choices] == [c.message.content for c in b.choices]
    assert [c.index for c in a.choices] == [0, 1, 2]
    # stop: the completion ends before the stop string's first occurrence
    free = server.client.completions.create(model="tiny", prompt=Q[2], max_tokens=12, temperature=0).choices[0].text
    cut = free[3:5]
    stopped = server.client.completions.create(model="tiny", prompt=Q[2], max_tokens=12, temperature=0, stop=[cut]).choices[0]
    assert stopped.text == free[: free.find(cut)] and stopped.finish_reason == "stop"


def test_completion_logprobs_echo_equal_tunesmith_likelihood(server, runs):
    from tunesmith.answering import Answerer
    from tunesmith.data.templating import IGNORE, render_chat
    from tunesmith.eval.likelihood import option_logprobs

    answerer = Answerer.load(runs["lora-a"])
    conv = answerer.how.messages([Q[0]])[0]
    options = ["Ada Vossel", "nobody", "the refund desk"]
    expected = option_logprobs(answerer.model, answerer.tok, [conv], [options])[0]
    for opt, want in zip(options, expected):
        ex = render_chat(answerer.tok, conv + [{"role": "assistant", "content": opt}], loss_on="last")
        r = server.client.completions.create(model="lora-a", prompt=ex.input_ids, max_tokens=0, echo=True, logprobs=1)
        lp = r.choices[0].logprobs
        assert len(lp.token_logprobs) == len(ex.input_ids) and lp.token_logprobs[0] is None
        got = sum(v for v, y in zip(lp.token_logprobs, ex.labels) if y != IGNORE)
        assert got == pytest.approx(want, abs=1e-4)
        assert all(max(t.values()) >= v - 1e-6 for t, v in zip(lp.top_logprobs[1:], lp.token_logprobs[1:]))
    # without echo: the generated tokens only, with their log-probs
    r = server.client.completions.create(model="lora-a", prompt="Hello", max_tokens=3, logprobs=2, temperature=0)
    assert len(r.choices[0].logprobs.tokens) == r.usage.completion_tokens == len(r.choices[0].logprobs.token_logprobs)


def test_classification_endpoint_equals_generate(server, runs):
    texts = ["I want my money back", "The app crashes on start", "Thanks, great service"]
    r = httpx.post(server.base_url + "/classifications", json={"model": "head", "input": texts}, timeout=60)
    assert r.status_code == 200, r.text
    got = r.json()["data"]
    expected = api.generate(runs["head"], texts)
    assert [g["label"] for g in got] == [e["label"] for e in expected]
    for g, e in zip(got, expected):
        assert g["probability"] == pytest.approx(e["probability"], abs=1e-6)
        assert g["probabilities"] == pytest.approx(e["probabilities"], abs=1e-6)
    one = httpx.post(server.base_url + "/classifications", json={"model": "head", "input": texts[0]}, timeout=60).json()["data"]
    assert len(one) == 1 and one[0]["label"] == got[0]["label"]


def test_errors_are_openai_exceptions(server):
    c = server.client
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model="nope", messages=[{"role": "user", "content": "Hi"}])
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}], temperature=5)
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model="head", messages=[{"role": "user", "content": "Hi"}])
    with pytest.raises(openai.BadRequestError):
        c.completions.create(model="tiny", prompt="Hi", logprobs=20)


@pytest.fixture(scope="module")
def keyed(tiny_model_dir):
    from tunesmith.serve import BackgroundServer, build

    engine = build([str(tiny_model_dir)], ["tiny"], max_queue=8)
    with BackgroundServer(engine, api_key="s3cret") as srv:
        yield srv


def test_malformed_corpus_gets_4xx_json_and_server_stays_healthy(keyed, caplog):
    rows = _bench().run_corpus(keyed.base_url, "tiny", "s3cret")
    assert len(rows) >= 21
    bad = [r for r in rows if not r["ok"]]
    assert not bad, bad
    status = {r["kind"]: r["status"] for r in rows}
    assert status["missing auth when key set"] == 401 and status["unknown model"] == 404
    assert status["oversized body"] == 413 and status["wrong method"] == 405
    assert "Traceback" not in caplog.text
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=keyed.base_url, api_key="wrong", max_retries=0).models.list()
    ok = openai.OpenAI(base_url=keyed.base_url, api_key="s3cret", max_retries=0)
    assert [m.id for m in ok.models.list().data] == ["tiny"]


def test_overload_answers_503_not_a_hang(keyed, monkeypatch):
    from tunesmith.serve import handlers

    release = threading.Event()
    real = handlers.HANDLERS["chat"]

    def slow(jobs):
        release.wait(30)
        return real(jobs)

    monkeypatch.setitem(handlers.HANDLERS, "chat", slow)
    monkeypatch.setattr(keyed.engine, "max_queue", 1)
    c = openai.OpenAI(base_url=keyed.base_url, api_key="s3cret", max_retries=0, timeout=60)
    results = []

    def call(i):
        try:
            # sampling requests are never batched together: one runs, one waits, the rest overflow
            results.append(c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": Q[i]}], max_tokens=2,
                                                     temperature=1.0, seed=i))
        except openai.APIStatusError as err:
            results.append(err)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
        time.sleep(0.3)
    release.set()
    for t in threads:
        t.join()
    errors = [r for r in results if isinstance(r, Exception)]
    assert errors and all(e.status_code == 503 for e in errors), results
    assert len(errors) < 4


def test_an_internal_failure_is_a_json_500_and_one_log_line(keyed, monkeypatch, caplog):
    from tunesmith.serve import handlers

    def broken(jobs):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setitem(handlers.HANDLERS, "chat", broken)
    c = openai.OpenAI(base_url=keyed.base_url, api_key="s3cret", max_retries=0)
    with caplog.at_level("ERROR", logger="tunesmith.serve"), pytest.raises(openai.InternalServerError) as err:
        c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    assert "boom" not in str(err.value) and "Traceback" not in caplog.text
    lines = [r for r in caplog.records if r.name == "tunesmith.serve"]
    assert len(lines) == 1 and "second line" not in lines[0].getMessage()

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_serve_sigterm_finishes_in_flight_then_refuses(tiny_model_dir, tmp_path):
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "SERVE_KEY": "k"}
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "tunesmith", "serve", str(tiny_model_dir), "--name", "tiny", "--port", str(port),
                             "--api-key-env", "SERVE_KEY"], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.time() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.3)
        result = {}

        def long_request():
            c = openai.OpenAI(base_url=base + "/v1", api_key="k", max_retries=0, timeout=120)
            result["r"] = c.completions.create(model="tiny", prompt="Once upon a time", max_tokens=400, temperature=0)

        t = threading.Thread(target=long_request)
        t.start()
        time.sleep(1.0)  # the request is in flight
        proc.send_signal(signal.SIGTERM)
        t.join(120)
        assert result["r"].usage.completion_tokens > 0  # it finished, with its answer
        # uvicorn re-raises the signal once drained, so the exit status is SIGTERM's (or 0)
        assert proc.wait(60) in (0, -signal.SIGTERM)
        with pytest.raises(httpx.TransportError):
            httpx.get(base + "/health", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    text = (tmp_path / "serve.log").read_text()
    assert "Traceback" not in text and "serving tiny" in text


def test_serve_without_the_key_variable_is_a_one_line_error(tiny_model_dir, monkeypatch):
    from tunesmith.errors import TunesmithError

    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(TunesmithError, match="NO_SUCH_KEY_VAR"):
        api.serve([str(tiny_model_dir)], api_key_env="NO_SUCH_KEY_VAR")
    with pytest.raises(TunesmithError, match="used twice"):
        api.serve([str(tiny_model_dir), str(tiny_model_dir)])


def test_tunesmith_eval_judge_against_a_tunesmith_server(server, runs, demo_dir, tmp_path, caplog):
    # The tiny judge is random weights: its replies hold no score, so every judgment is
    # "unparsable". What is tested is the protocol: each request got a 200 chat completion
    # (no HTTP error, no retry) that the judge read.
    r = api.evaluate(runs["lora-a"], progress=False, data=str(demo_dir / "qa_test.jsonl"), task="qa", limit=3, max_new_tokens=4,
                     output_dir=str(tmp_path), force=True, judge={"base_url": server.base_url, "model": "tiny", "cache_dir": str(tmp_path / "jc")})
    h = r["helpfulness"]
    assert h["method"] == "judge (tiny)" and h["stats"]["requests"] >= 3 and h["stats"]["retries"] == 0, h
    assert "HTTP" not in caplog.text and "cannot reach" not in caplog.text
    assert h["stats"]["failures"] == 0 or "unparsable judge reply" in caplog.text


def test_lm_eval_local_completions_loglikelihood(server, runs, tmp_path, monkeypatch):
    pytest.importorskip("tenacity", reason="lm-eval's API models need tenacity (pip install 'lm-eval[api]')")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import torch
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from tunesmith.answering import Answerer

    rows = [{"question": f"Question {i}: which is right?", "choices": [" alpha", " beta", " gamma"], "answer": i % 3} for i in range(10)]
    data = tmp_path / "mc.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "mc.yaml").write_text(
        "task: tunesmith_mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: " + str(data) + "\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: '{{question}}'\ndoc_to_choice: '{{choices}}'\n"
        "doc_to_target: '{{answer}}'\nmetric_list:\n  - metric: acc\n")
    args = (f"model=lora-a,base_url={server.base_url}/completions,tokenizer_backend=huggingface,tokenizer={runs['tiny']},"
            "tokenized_requests=True,max_retries=1,num_concurrent=1")
    out = simple_evaluate(model="local-completions", model_args=args, tasks=["tunesmith_mc"], task_manager=TaskManager(include_path=str(tasks)),
                          log_samples=True, bootstrap_iters=0)
    samples = out["samples"]["tunesmith_mc"]
    assert len(samples) == 10 and 0.0 <= out["results"]["tunesmith_mc"]["acc,none"] <= 1.0
    ans = Answerer.load(runs["lora-a"])
    with torch.no_grad():
        for s in samples[:3]:
            for (ctx, cont), resp in zip([a for a in s["arguments"]], s["resps"]):
                c_ids = ans.tok(ctx, add_special_tokens=False)["input_ids"]
                whole = ans.tok(ctx + cont, add_special_tokens=False)["input_ids"]
                ids = torch.tensor([whole])
                lp = torch.log_softmax(ans.model(ids).logits[0].float(), -1)
                want = sum(lp[t - 1, whole[t]].item() for t in range(len(c_ids), len(whole)))
                assert float(resp[0][0]) == pytest.approx(want, abs=1e-4)


@pytest.mark.integration
def test_served_default_lora_run_equals_its_evaluation(default_lora_run):
    from tunesmith.answering import Answerer
    from tunesmith.generation import GenerationSettings
    from tunesmith.serve import BackgroundServer, build

    rows = [json.loads(x) for x in (default_lora_run.parent.parent / "data" / "qa_test.jsonl").read_text().splitlines()][:20]
    questions = [r["prompt"] if "prompt" in r else r["question"] for r in rows]
    expected = Answerer.load(default_lora_run).answer(questions, GenerationSettings(max_new_tokens=24))
    engine = build([str(default_lora_run)])
    with BackgroundServer(engine) as srv:
        c = openai.OpenAI(base_url=srv.base_url, api_key="unused", max_retries=0, timeout=600)
        out = [None] * len(questions)

        def ask(i):
            out[i] = _ask(c, default_lora_run.name, questions[i], max_tokens=24)

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(questions))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert out == expected
