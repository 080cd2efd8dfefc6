"""A tiny, deterministic OpenAI-protocol server on 127.0.0.1 for tests (standard library only).

It speaks `POST /v1/chat/completions` (and `GET /v1/models`) over real HTTP, so clients are
tested end to end without patching. Replies are pure functions of the request, so tests can
assert exact values:

* a judge scoring prompt (fields in `<answer>` / `<reference>` tags, as tunesmith's rubrics
  write them) gets `Score: 5` when the answer contains the reference (case-insensitive),
  else `Score: 1`;
* a pairwise prompt (`<answer_a>`, `<answer_b>`) gets `Winner: A` / `Winner: B` for the
  answer containing the reference (`tie` if both or neither), or always `Winner: A` with
  `prefer_a=True`, to simulate a position-biased judge;
* anything else gets `echo: <last user message>`; pass `reply=fn(body) -> str` to override.

Fault injection: `fail_first=N` answers the first N requests with `fail_status` (429 comes
with `Retry-After: <retry_after>`), `garbage_first=N` makes the next N replies unparsable
(`ALWAYS` for every one), `delay_s` sleeps before answering (for timeout tests).

    with OpenAIStubServer(fail_first=2) as srv:
        client(base_url=srv.base_url)   # http://127.0.0.1:<port>/v1
        srv.count, srv.requests, srv.auth_headers
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

__all__ = ["ALWAYS", "OpenAIStubServer", "judge_reply"]

ALWAYS = 10**9  # for fail_first / garbage_first: every request
GARBAGE = "I have read both texts carefully and they seem reasonable to me."


def _tag(text: str, name: str) -> str | None:
    m = re.search(rf"<{name}>\s*(.*?)\s*</{name}>", text, re.DOTALL)
    return m.group(1) if m else None


def _contains(answer: str | None, reference: str | None) -> bool:
    return bool(answer is not None and reference and reference.lower() in answer.lower())


def judge_reply(body: dict, prefer_a: bool = False) -> str:
    """The stub's default reply to a chat request (see the module docstring)."""
    users = [m.get("content", "") for m in body.get("messages", []) if m.get("role") == "user"]
    # The first user turn holds the judge prompt; later turns (a reminder) only repeat the ask.
    prompt = users[0] if users else ""
    ref = _tag(prompt, "reference")
    a, b = _tag(prompt, "answer_a"), _tag(prompt, "answer_b")
    if a is not None and b is not None:
        if prefer_a:
            return "Position A reads better to me.\nWinner: A"
        win_a, win_b = _contains(a, ref), _contains(b, ref)
        verdict = "A" if win_a and not win_b else "B" if win_b and not win_a else "tie"
        return f"Compared both answers against the reference.\nWinner: {verdict}"
    answer = _tag(prompt, "answer")
    if answer is not None:
        score = 5 if _contains(answer, ref) else 1
        return f"The answer {'matches' if score == 5 else 'misses'} the reference.\nScore: {score}"
    return f"echo: {users[-1] if users else ''}"


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # a sleeping handler (delay_s) must not block close()
    stub: "OpenAIStubServer"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass

    def _send(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test): nothing to answer

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            self._send(200, {"object": "list", "data": [
                {"id": self.server.stub.model, "object": "model", "owned_by": "stub"}]})
        else:
            self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        status, payload, headers = self.server.stub._handle(self.path, dict(self.headers), body)
        self._send(status, payload, headers)


class OpenAIStubServer:
    """A loopback OpenAI-compatible server; use as a context manager."""

    def __init__(self, *, prefer_a: bool = False, fail_first: int = 0, fail_status: int = 500,
                 retry_after: str | None = "0", garbage_first: int = 0, delay_s: float = 0.0,
                 model: str = "stub-judge", reply: Callable[[dict], str] | None = None):
        self.prefer_a, self.fail_first, self.fail_status = prefer_a, fail_first, fail_status
        self.retry_after, self.garbage_first, self.delay_s = retry_after, garbage_first, delay_s
        self.model, self.reply = model, reply
        self.requests: list[dict] = []  # {"path", "headers", "body", "status"} in arrival order
        self._lock = threading.Lock()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> "OpenAIStubServer":
        self._httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.stub = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="openai-stub", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "OpenAIStubServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------ what tests read

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def count(self) -> int:
        """Requests received so far (failed ones included)."""
        with self._lock:
            return len(self.requests)

    @property
    def auth_headers(self) -> list[str | None]:
        """The Authorization header of each request, None where it was absent."""
        with self._lock:
            return [r["headers"].get("Authorization") for r in self.requests]

    # ------------------------------------------------------------ replies

    def _handle(self, path: str, headers: dict, body: Any) -> tuple[int, dict, dict]:
        with self._lock:
            index = len(self.requests)
            record = {"path": path, "headers": headers, "body": body, "status": 200}
            self.requests.append(record)
            failing = index < self.fail_first
            garbage = not failing and self.garbage_first > 0
            if garbage:
                self.garbage_first -= 1
        if self.delay_s:
            time.sleep(self.delay_s)
        if path.rstrip("/") != "/v1/chat/completions":
            record["status"] = 404
            return 404, {"error": {"message": f"no route {path}", "type": "not_found"}}, {}
        if failing:
            record["status"] = self.fail_status
            wait = self.fail_status == 429 and self.retry_after
            extra = {"Retry-After": self.retry_after} if wait else {}
            return self.fail_status, {"error": {"message": f"injected failure {index + 1}",
                                                "type": "server_error", "code": self.fail_status}}, extra
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            record["status"] = 400
            return 400, {"error": {"message": "body must be JSON with a 'messages' list",
                                   "type": "invalid_request_error"}}, {}
        if garbage:
            content = GARBAGE
        elif self.reply is not None:
            content = self.reply(body)
        else:
            content = judge_reply(body, self.prefer_a)
        return 200, self._completion(index, body, content), {}

    def _completion(self, index: int, body: dict, content: str) -> dict:
        prompt_words = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
        words = len(content.split())
        return {
            "id": f"chatcmpl-stub-{index}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model") or self.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_words, "completion_tokens": words,
                      "total_tokens": prompt_words + words},
        }
