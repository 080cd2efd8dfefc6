"""Load and robustness of `tunesmith serve` on loopback.

    python benchmarks/serve_load.py                      # the default model, ~5 min on 2 CPU cores
    python benchmarks/serve_load.py runs/my-run --clients 50 --requests 3 --max-tokens 16

1. Sequential: one request at a time (`--sequential` requests), the baseline.
2. Load: `--clients` threads, each with its own official openai client, send `--requests` chat
   requests each (greedy, different questions), all at once. Reported: requests/s, generated
   tokens/s, p50/p99 latency, errors (goal 0), the ratio of requests/s against sequential, and the
   batches the server formed.
3. Malformed corpus: every kind of bad request in MALFORMED (bad JSON, wrong types, unknown model,
   ...) sent to a server started with an API key; each must get a 4xx JSON error in OpenAI's shape,
   and the server must still answer /health afterwards. tests/test_serve.py runs the same corpus.

The server runs in this process (tunesmith.serve.BackgroundServer on a free port); the clients
talk to it over real HTTP.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time

KEY = "bench-secret"


def malformed(model: str) -> list[tuple[str, str, str, bytes | None, dict]]:
    """(kind, method, path under /v1, body, extra headers): requests a server must refuse with a 4xx."""
    def chat(**over) -> bytes:
        body = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
        body.update(over)
        return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()

    user = [{"role": "user", "content": "Hi"}]
    return [
        ("bad JSON", "POST", "/chat/completions", b'{"model": "x", "messages": [', {}),
        ("body not an object", "POST", "/chat/completions", b'[1, 2, 3]', {}),
        ("empty body", "POST", "/chat/completions", b"", {}),
        ("unknown model", "POST", "/chat/completions", chat(model="no-such-model"), {}),
        ("missing model", "POST", "/chat/completions", chat(model=...), {}),
        ("missing messages", "POST", "/chat/completions", chat(messages=...), {}),
        ("empty messages", "POST", "/chat/completions", chat(messages=[]), {}),
        ("messages not a list", "POST", "/chat/completions", chat(messages="Hi"), {}),
        ("bad role", "POST", "/chat/completions", chat(messages=[{"role": "wizard", "content": "Hi"}]), {}),
        ("non-string content", "POST", "/chat/completions", chat(messages=[{"role": "user", "content": 42}]), {}),
        ("missing content", "POST", "/chat/completions", chat(messages=[{"role": "user"}]), {}),
        ("last turn not user", "POST", "/chat/completions", chat(messages=user + [{"role": "assistant", "content": "Yo"}]), {}),
        ("negative max_tokens", "POST", "/chat/completions", chat(max_tokens=-5), {}),
        ("huge max_tokens", "POST", "/chat/completions", chat(max_tokens=10**9), {}),
        ("max_tokens a string", "POST", "/chat/completions", chat(max_tokens="10"), {}),
        ("n too large", "POST", "/chat/completions", chat(n=1000), {}),
        ("bad temperature", "POST", "/chat/completions", chat(temperature=-1), {}),
        ("temperature a string", "POST", "/chat/completions", chat(temperature="hot"), {}),
        ("bad top_p", "POST", "/chat/completions", chat(top_p=1.5), {}),
        ("too many stop strings", "POST", "/chat/completions", chat(stop=["a", "b", "c", "d", "e"]), {}),
        ("stream with n > 1", "POST", "/chat/completions", chat(stream=True, n=2), {}),
        ("tools", "POST", "/chat/completions", chat(tools=[{"type": "function", "function": {"name": "f"}}]), {}),
        ("wrong content-type", "POST", "/chat/completions", chat(), {"Content-Type": "text/plain"}),
        ("oversized body", "POST", "/chat/completions", chat(messages=[{"role": "user", "content": "x" * (2 << 20)}]), {}),
        ("context too long", "POST", "/chat/completions", chat(messages=[{"role": "user", "content": "word " * 9000}], max_tokens=8), {}),
        ("logprobs too large", "POST", "/completions", json.dumps({"model": model, "prompt": "Hi", "logprobs": 50}).encode(), {}),
        ("completion token id out of range", "POST", "/completions", json.dumps({"model": model, "prompt": [10**9]}).encode(), {}),
        ("empty prompt", "POST", "/completions", json.dumps({"model": model, "prompt": ""}).encode(), {}),
        ("classification on a chat model", "POST", "/classifications", json.dumps({"model": model, "input": "Hi"}).encode(), {}),
        ("unknown endpoint", "POST", "/embeddings", chat(), {}),
        ("wrong method", "GET", "/chat/completions", None, {}),
        ("missing auth when key set", "POST", "/chat/completions", chat(), {"Authorization": ""}),
        ("wrong key", "POST", "/chat/completions", chat(), {"Authorization": "Bearer wrong"}),
    ]


def run_corpus(base_url: str, model: str, key: str | None = KEY) -> list[dict]:
    """Send every malformed request; returns [{kind, status, ok}] (ok: a 4xx with an OpenAI error body)."""
    try:  # the HTTP client the installed openai package uses (httpx2 in openai 3, httpx before)
        import httpx2 as httpx
    except ImportError:
        import httpx

    rows = []
    with httpx.Client(timeout=60) as client:
        for kind, method, path, body, headers in malformed(model):
            h = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {}), **headers}
            h = {k: v for k, v in h.items() if v}
            r = client.request(method, base_url + path, content=body, headers=h)
            try:
                err = r.json().get("error", {})
                shaped = isinstance(err.get("message"), str) and "type" in err and "Traceback" not in r.text
            except ValueError:
                shaped = False
            rows.append({"kind": kind, "status": r.status_code, "ok": 400 <= r.status_code < 500 and shaped,
                         "message": (r.json().get("error", {}).get("message", "") if shaped else r.text)[:90]})
        healthy = client.get(base_url.removesuffix("/v1") + "/health").status_code == 200
    rows.append({"kind": "server healthy afterwards (GET /health)", "status": 200 if healthy else 0, "ok": healthy, "message": ""})
    return rows


QUESTIONS = ["What is the refund window?", "Who founded the company?", "Where is the head office?", "What does the warranty cover?",
             "How do I reset my password?", "Which payment methods are accepted?", "When is support open?", "How long does shipping take?"]


def _load(base_url: str, model: str, clients: int, requests: int, max_tokens: int, key: str | None) -> dict:
    import openai

    latencies, errors, tokens = [], [], [0]
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def client(i: int) -> None:
        c = openai.OpenAI(base_url=base_url, api_key=key or "none", max_retries=0, timeout=600)
        start.wait()
        for k in range(requests):
            q = f"{QUESTIONS[(i + k) % len(QUESTIONS)]} (client {i})"
            t0 = time.perf_counter()
            try:
                r = c.chat.completions.create(model=model, messages=[{"role": "user", "content": q}], max_tokens=max_tokens, temperature=0)
                with lock:
                    latencies.append(time.perf_counter() - t0)
                    tokens[0] += r.usage.completion_tokens
            except Exception as err:  # counted and reported, never raised: the figure is the error count
                with lock:
                    errors.append(f"{type(err).__name__}: {err}"[:120])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = sorted(latencies)
    return {"requests": len(lat), "errors": len(errors), "first_error": errors[0] if errors else None, "wall_s": wall,
            "requests_per_s": len(lat) / wall, "tokens_per_s": tokens[0] / wall,
            "p50_s": statistics.median(lat) if lat else None, "p99_s": lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else None}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", default=None, help="run or model to serve (default: the built-in default model)")
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--requests", type=int, default=3, help="requests per client")
    p.add_argument("--sequential", type=int, default=8, help="one-at-a-time requests for the baseline")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--max-batch", type=int, default=32)
    a = p.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from tunesmith.models.builtins import DEFAULT_MODEL
    from tunesmith.serve import BackgroundServer, build

    spec = a.model or DEFAULT_MODEL
    engine = build([spec], ["bench"], max_batch=a.max_batch, max_queue=4 * a.clients * a.requests)
    with BackgroundServer(engine, api_key=KEY) as srv:
        seq = _load(srv.base_url, "bench", 1, a.sequential, a.max_tokens, KEY)
        before = dict(engine.stats)
        load = _load(srv.base_url, "bench", a.clients, a.requests, a.max_tokens, KEY)
        batches = engine.stats["batches"] - before["batches"]
        items = engine.stats["items"] - before["items"]
        corpus = run_corpus(srv.base_url, "bench", KEY)
    print(f"model {spec}; greedy chat, max_tokens {a.max_tokens}; max_batch {a.max_batch}; torch threads {_threads()}")
    print(f"sequential: {seq['requests']} requests, {seq['requests_per_s']:.2f} req/s, {seq['tokens_per_s']:.1f} generated tok/s, "
          f"p50 {seq['p50_s']:.2f} s, errors {seq['errors']}")
    print(f"load: {a.clients} clients x {a.requests} requests = {load['requests']} ok, errors {load['errors']}"
          + (f" (first: {load['first_error']})" if load["errors"] else ""))
    print(f"load: {load['requests_per_s']:.2f} req/s, {load['tokens_per_s']:.1f} generated tok/s, p50 {load['p50_s']:.2f} s, "
          f"p99 {load['p99_s']:.2f} s, wall {load['wall_s']:.1f} s")
    print(f"load: {batches} batches, mean {items / max(batches, 1):.1f} requests per batch, max {engine.stats['max_batch_seen']}")
    print(f"throughput vs one-at-a-time: {load['requests_per_s'] / seq['requests_per_s']:.1f}x")
    print("\nmalformed corpus:")
    print("| kind | status | 4xx JSON error |\n|---|---|---|")
    for r in corpus:
        print(f"| {r['kind']} | {r['status']} | {'yes' if r['ok'] else 'NO'} |")


def _threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
