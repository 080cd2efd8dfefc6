"""LLM-as-judge over any OpenAI-compatible chat endpoint (vLLM, llama.cpp, Ollama, hosted APIs).

`Judge.score` rates answers on a rubric's scale (helpfulness, correctness against a reference,
domain adherence); `Judge.pairwise` compares two answers, asking in both orders so that a
judge's position bias cancels out. Replies end in `Score: N` / `Winner: A|B|tie`; the last
such line is parsed, and a reply without one is asked again once with a reminder.

Every reply that parsed is cached on disk under a hash of (model, rubric name and version,
exact messages), so re-running an evaluation costs no requests and a changed prompt never
reuses stale scores. Failed items are never dropped: they come back with `error` set and
`score`/`winner` None, and are counted in `Judge.stats` and by `summarize`.

Bounded cost. `timeout_s` bounds each request as a whole (connect, headers and body), not
each socket read: a server that trickles a byte a second is cut off at the deadline by a
timer that shuts the socket down. Retries are bounded by `max_retries`, and a circuit
breaker makes a dead judge cheap: after `breaker_failures` consecutive failed attempts
(any thread) further requests fail at once for `breaker_cooldown_s`, then one is tried
again. So a judge that is down costs about `breaker_failures` x `timeout_s` per evaluation,
not that per item. Failed judgments are never cached (only replies that parsed are).

Standard library only (urllib; the deadline timer is ours because neither urllib nor
httpx offers a total-request timeout), so the judge works wherever tunesmith installs.
"""

from __future__ import annotations

import email.utils
import hashlib
import http.client
import json
import logging
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from tunesmith.atomic import write_text_atomic
from tunesmith.configlib import option
from tunesmith.errors import TunesmithError
from tunesmith.eval.rubrics import (Rubric, get_rubric, parse_score, parse_winner, render_messages,
                                   swap_answers)

__all__ = ["JudgeConfig", "JudgeResult", "PairResult", "Judge", "summarize", "parse_score",
           "parse_winner", "cache_key", "default_cache_dir"]

log = logging.getLogger(__name__)

_MAX_BACKOFF_S = 30.0
_MAX_RETRY_AFTER_S = 120.0  # a server may ask for a pause, but not hang a run for hours


@dataclass
class JudgeConfig:
    """Where the judge model is served and how to talk to it."""

    base_url: str | None = option(None, "OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
    model: str = option("judge", "model name sent to the endpoint")
    api_key_env: str | None = option("OPENAI_API_KEY", "environment variable holding the API key "
                                     "(sent as a Bearer token when set)")
    timeout_s: float = option(60.0, "seconds one request may take in all (connect, wait, read)",
                              minimum=0.001)
    max_retries: int = option(4, "retries after a 429, 5xx, timeout or connection error", minimum=0)
    backoff_s: float = option(1.0, "first retry delay; doubles each retry, capped at 30 s",
                              minimum=0.0)
    cache_dir: str | None = option(None, "reply cache directory (default: <user cache>/tunesmith/judge)")
    max_tokens: int = option(256, "longest reply the judge may write", minimum=1)
    concurrency: int = option(4, "requests in flight at once", minimum=1)
    breaker_failures: int = option(5, "consecutive failed attempts after which requests fail at "
                                   "once (circuit breaker); 0 turns it off", minimum=0)
    breaker_cooldown_s: float = option(60.0, "how long the open breaker fails requests before "
                                       "trying the judge again", minimum=0.0)


@dataclass(frozen=True)
class JudgeResult:
    """One scored item; `score` is None exactly when `error` says why it failed."""

    score: float | None
    rationale: str
    raw: str
    error: str | None = None
    cached: bool = False


@dataclass(frozen=True)
class PairResult:
    """One pairwise comparison: `votes` are the A/B-order and B/A-order verdicts."""

    winner: str | None  # "a", "b", "tie", or None when a vote failed
    votes: tuple[str | None, str | None]
    error: str | None = None
    cached: bool = False


@dataclass(frozen=True)
class _Reply:
    """A judge reply for one prompt: the parsed value, or the error that stopped it."""

    value: Any
    rationale: str
    raw: str
    error: str | None
    cached: bool


class _RequestFailed(Exception):
    """A request that failed for good: retries exhausted or an error not worth retrying."""


class _Retryable(Exception):
    """A transient failure (429, 5xx, timeout, connection); `delay` overrides the backoff."""

    def __init__(self, message: str, delay: float | None = None, *, down: bool = True):
        super().__init__(message)
        self.delay = delay
        self.down = down  # counts toward the circuit breaker (a 429 means alive but busy)


class _Breaker:
    """Counts consecutive failed attempts across threads; past the threshold, requests fail
    at once until the cooldown ends, then the next attempt tries the judge again."""

    def __init__(self, threshold: int, cooldown_s: float):
        self.threshold, self.cooldown_s = threshold, cooldown_s
        self._failures, self._open_until = 0, 0.0
        self._lock = threading.Lock()

    def check(self) -> None:
        with self._lock:
            wait = self._open_until - time.monotonic()
            if self.threshold and self._failures >= self.threshold and wait > 0:
                raise _RequestFailed(f"judge unavailable: circuit breaker open after {self._failures} "
                                     f"consecutive failed attempts (next try in {wait:.0f} s)")

    def record(self, ok: bool) -> None:
        with self._lock:
            self._failures = 0 if ok else self._failures + 1
            if self.threshold and self._failures >= self.threshold:
                self._open_until = time.monotonic() + self.cooldown_s


class _Deadline:
    """Ends one request at its total deadline by shutting its socket down: urllib's timeout
    is per socket operation, so a server trickling a byte at a time would never trip it."""

    def __init__(self, seconds: float):
        self.expired = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> "_Deadline":
        self._timer.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._timer.cancel()

    def attach(self, sock: socket.socket | None) -> None:
        """Called once TCP is connected (connect itself is bounded by the socket timeout)."""
        with self._lock:
            self._sock = sock
            if self.expired:
                self._shutdown()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            self._shutdown()

    def _shutdown(self) -> None:
        if self._sock is not None:
            try:  # wakes a blocked recv(), which then sees end-of-stream
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _DeadlineMixin:
    """A urllib handler whose connections report their socket to a `_Deadline` as soon as
    TCP connects (so a TLS handshake or proxy tunnel is bounded too); it keeps urllib's
    proxy, TLS and redirect handling, which a hand-rolled client would lose."""

    deadline: _Deadline

    def do_open(self, http_class, req, **kwargs):
        deadline = self.deadline

        class Tracked(http_class):
            def __init__(self, *args: Any, **kw: Any) -> None:
                super().__init__(*args, **kw)
                create = self._create_connection  # http.client's hook for opening the socket

                def create_and_attach(*a: Any, **k: Any) -> socket.socket:
                    sock = create(*a, **k)
                    deadline.attach(sock)
                    return sock

                self._create_connection = create_and_attach

        return super().do_open(Tracked, req, **kwargs)


class _HTTPHandler(_DeadlineMixin, urllib.request.HTTPHandler):
    pass


class _HTTPSHandler(_DeadlineMixin, urllib.request.HTTPSHandler):
    pass


def _open_with_deadline(request: urllib.request.Request, timeout_s: float) -> bytes:
    """The response body of `request`, read within `timeout_s` in total; raises
    TimeoutError past the deadline (whatever the socket layer made of the shutdown)."""
    with _Deadline(timeout_s) as deadline:
        http_handler, https_handler = _HTTPHandler(), _HTTPSHandler()
        http_handler.deadline = https_handler.deadline = deadline
        opener = urllib.request.build_opener(http_handler, https_handler)
        try:
            with opener.open(request, timeout=timeout_s) as resp:
                payload = resp.read()
        except urllib.error.HTTPError as err:
            err.detail = _error_detail(err)  # an error body is read within the deadline too
            raise
        except (OSError, http.client.HTTPException):
            if deadline.expired:
                raise TimeoutError(f"no complete reply within {timeout_s:g} s") from None
            raise
        if deadline.expired:  # a body cut short without a length still must not count
            raise TimeoutError(f"no complete reply within {timeout_s:g} s")
        return payload


def default_cache_dir() -> Path:
    """$TUNESMITH_CACHE/judge, else $XDG_CACHE_HOME (or ~/.cache)/tunesmith/judge."""
    if os.environ.get("TUNESMITH_CACHE"):
        return Path(os.environ["TUNESMITH_CACHE"]).expanduser() / "judge"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tunesmith" / "judge"


class _Cache:
    """One JSON file per key; writes go through a temp file + rename, so readers never see
    half a file, even with several processes sharing the directory."""

    def __init__(self, root: Path):
        self.root = root

    def get(self, key: str) -> str | None:
        try:
            data = json.loads((self.root / f"{key}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # missing or corrupt: ask again and overwrite
        reply = data.get("reply") if isinstance(data, dict) else None
        return reply if isinstance(reply, str) else None

    def put(self, key: str, record: dict) -> None:
        try:
            write_text_atomic(self.root / f"{key}.json", json.dumps(record, ensure_ascii=False, indent=1))
        except OSError as err:  # a read-only cache costs requests, not the evaluation
            log.warning("judge cache: cannot write %s (%s)", self.root, err)


def cache_key(model: str, rubric: Rubric, messages: list[dict]) -> str:
    """sha256 over what determines a reply; the endpoint's URL is deliberately left out, so
    the same model behind another host or port reuses the cache."""
    blob = json.dumps({"model": model, "rubric": rubric.name, "version": rubric.version,
                       "messages": messages}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _check_items(items: Sequence[dict], rubric: Rubric) -> None:
    """Fail before spending any request: each item must carry the rubric's fields."""
    if isinstance(items, dict):
        raise TunesmithError("judge items must be a list of dicts, got a single dict (wrap it in [...])")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise TunesmithError(f"judge item {i}: expected a dict, got {type(item).__name__}")
        for key in rubric.requires:
            value = item.get(key)
            # An empty answer is a legitimate (bad) answer; an empty reference or domain
            # leaves the judge nothing to compare against.
            if value is None or (key in ("reference", "domain") and not str(value).strip()):
                raise TunesmithError(f"judge item {i}: missing '{key}' (rubric '{rubric.name}' "
                                     f"needs: {', '.join(rubric.requires)})")


class Judge:
    """Scores and compares answers with a judge model; thread-safe, results in input order."""

    def __init__(self, cfg: JudgeConfig):
        if not cfg.base_url:
            raise TunesmithError("the judge has no base_url: set judge.base_url to an OpenAI-compatible "
                                 "endpoint, e.g. http://127.0.0.1:8000/v1 (vLLM, llama.cpp, Ollama "
                                 "or a hosted API; key from $OPENAI_API_KEY or judge.api_key_env)")
        if not cfg.base_url.startswith(("http://", "https://")):
            raise TunesmithError(f"judge.base_url {cfg.base_url!r} must start with http:// or https:// "
                                 "(e.g. http://127.0.0.1:8000/v1)")
        self.cfg = cfg
        self.url = cfg.base_url.rstrip("/") + "/chat/completions"
        self.cache = _Cache(Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_dir())
        self.stats: dict[str, int] = {"requests": 0, "cached": 0, "retries": 0, "failures": 0,
                                      "reprompts": 0}
        self._lock = threading.Lock()
        self._breaker = _Breaker(cfg.breaker_failures, cfg.breaker_cooldown_s)

    # ------------------------------------------------------------ public API

    def score(self, items: list[dict], rubric: str | Rubric = "helpfulness") -> list[JudgeResult]:
        """Rate each item's answer on the rubric's scale; failures have score None."""
        rub = get_rubric(rubric, pairwise=False)
        _check_items(items, rub)
        replies = self._ask_all(rub, [render_messages(rub, item) for item in items],
                                lambda text: parse_score(text, rub.scale))
        results = [JudgeResult(r.value, r.rationale, r.raw, r.error, r.cached) for r in replies]
        self._count_failures([r.error for r in results], len(results))
        return results

    def pairwise(self, items: list[dict],
                 rubric: str | Rubric = "pairwise_helpfulness") -> list[PairResult]:
        """Which answer wins, asked as A/B and as B/A: agreement wins, disagreement ties."""
        rub = get_rubric(rubric, pairwise=True)
        _check_items(items, rub)
        prompts = [render_messages(rub, it) for it in items]
        prompts += [render_messages(rub, swap_answers(it)) for it in items]
        replies = self._ask_all(rub, prompts, parse_winner)
        n, results = len(items), []
        for first, second in zip(replies[:n], replies[n:]):
            # In the swapped prompt, position A holds answer_b: map its verdict back.
            votes = (first.value, {"a": "b", "b": "a"}.get(second.value, second.value))
            errors = [e for e in (first.error, second.error) if e]
            winner = None if errors else votes[0] if votes[0] == votes[1] else "tie"
            results.append(PairResult(winner, votes, "; ".join(errors) or None,
                                      first.cached and second.cached))
        self._count_failures([r.error for r in results], n)
        return results

    # ------------------------------------------------------------ asking

    def _ask_all(self, rubric: Rubric, prompts: list[list[dict]],
                 parse: Callable[[str], tuple[Any, str]]) -> list[_Reply]:
        """Ask every distinct prompt once (cache first), `concurrency` at a time."""
        keys = [cache_key(self.cfg.model, rubric, m) for m in prompts]
        unique = dict(zip(keys, prompts))  # identical prompts in one batch cost one request
        workers = max(1, min(self.cfg.concurrency, len(unique)))

        def ask(key: str) -> _Reply:
            return self._ask(rubric, key, unique[key], parse)

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="judge") as pool:
            answers = dict(zip(unique, pool.map(ask, unique)))
        return [answers[k] for k in keys]

    def _ask(self, rubric: Rubric, key: str, messages: list[dict],
             parse: Callable[[str], tuple[Any, str]]) -> _Reply:
        """One prompt: a cache hit, else a request (plus one reminder if unparsable)."""
        hit = self.cache.get(key)
        if hit is not None:
            try:
                value, rationale = parse(hit)
                self._bump("cached")
                return _Reply(value, rationale, hit, None, True)
            except ValueError:
                pass  # a cache entry the current parser rejects: ask again
        try:
            raw = self._post(messages)
            try:
                value, rationale = parse(raw)
            except ValueError:
                # Judges sometimes forget the final line; one reminder usually fixes it.
                self._bump("reprompts")
                reminder = (f"Your reply did not end with the required final line. Reply again: a "
                            f"short rationale, then a last line of the form {rubric.final_line()}.")
                raw = self._post([*messages, {"role": "assistant", "content": raw},
                                  {"role": "user", "content": reminder}])
                value, rationale = parse(raw)
        except _RequestFailed as err:
            return _Reply(None, "", "", str(err), False)
        except ValueError as err:
            return _Reply(None, "", raw, f"unparsable judge reply: {err}", False)
        self.cache.put(key, {"model": self.cfg.model, "rubric": rubric.name,
                             "version": rubric.version, "messages": messages, "reply": raw})
        return _Reply(value, rationale, raw, None, False)

    # ------------------------------------------------------------ HTTP

    def _post(self, messages: list[dict]) -> str:
        """The reply text, retrying transient failures with exponential backoff."""
        attempts = self.cfg.max_retries + 1
        for attempt in range(attempts):
            self._breaker.check()  # a dead judge fails here at once instead of per attempt
            try:
                reply = self._post_once(messages)
                self._breaker.record(True)
                return reply
            except _Retryable as err:
                if err.down:
                    self._breaker.record(False)
                if attempt + 1 >= attempts:
                    raise _RequestFailed(f"{err} (gave up after {attempts} attempt(s))") from None
                self._bump("retries")
                delay = err.delay if err.delay is not None else \
                    min(self.cfg.backoff_s * 2 ** attempt, _MAX_BACKOFF_S)
                time.sleep(max(0.0, delay))
        raise AssertionError("unreachable")

    def _post_once(self, messages: list[dict]) -> str:
        body = json.dumps({"model": self.cfg.model, "messages": messages, "temperature": 0,
                           "max_tokens": self.cfg.max_tokens}).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.cfg.api_key_env) if self.cfg.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        self._bump("requests")
        try:
            payload = _open_with_deadline(request, self.cfg.timeout_s)
        except urllib.error.HTTPError as err:
            text = f"HTTP {err.code} from {self.url}: {err.detail}"
            if err.code == 429:
                raise _Retryable(text, _retry_after(err.headers.get("Retry-After")), down=False) from None
            if err.code >= 500:
                raise _Retryable(text) from None
            self._breaker.record(True)  # the judge answered: it is up
            raise _RequestFailed(text) from None  # a bad request or key: retrying cannot help
        except (OSError, http.client.HTTPException) as err:  # URLError, timeouts, resets
            reason = getattr(err, "reason", None) or err
            raise _Retryable(f"cannot reach {self.url}: {reason}") from None
        return _reply_text(payload, self.url)

    # ------------------------------------------------------------ bookkeeping

    def _bump(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.stats[name] += n

    def _count_failures(self, errors: list[str | None], total: int) -> None:
        failed = [e for e in errors if e]
        if failed:
            self._bump("failures", len(failed))
            log.warning("judge: %d of %d item(s) failed (first: %s)", len(failed), total, failed[0])


def _reply_text(payload: bytes, url: str) -> str:
    """choices[0].message.content of an OpenAI chat response, or _RequestFailed."""
    try:
        data = json.loads(payload)
        content = data["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        snippet = payload[:200].decode("utf-8", "replace")
        raise _RequestFailed(f"malformed response from {url} (not an OpenAI chat completion): "
                             f"{snippet!r}") from None
    if not isinstance(content, str):
        raise _RequestFailed(f"response from {url} has no text content")
    return content


def _error_detail(err: urllib.error.HTTPError) -> str:
    """The server's own error message (OpenAI: {"error": {"message": ...}}), shortened."""
    try:
        raw = err.read(2000).decode("utf-8", "replace")
    except (OSError, http.client.HTTPException):  # cut off at the deadline
        raw = ""
    try:
        inner = json.loads(raw).get("error")
        raw = inner.get("message", raw) if isinstance(inner, dict) else str(inner or raw)
    except (ValueError, AttributeError):
        pass
    text = " ".join(raw.split()) or str(err.reason)
    return text if len(text) <= 200 else text[:197] + "..."


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date), or None to use the backoff."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER_S)


def summarize(results: Sequence[JudgeResult | PairResult]) -> dict[str, Any]:
    """Scores: {"mean", "n", "n_failed"} (mean over the n that scored). Pairs: counts of
    a/b/tie, `win_rate_a` (ties count half) over the n decided, and n_failed."""
    results = list(results)
    if results and all(isinstance(r, PairResult) for r in results):
        ok = [r.winner for r in results if r.winner is not None]
        counts = {w: ok.count(w) for w in ("a", "b", "tie")}
        rate = (counts["a"] + 0.5 * counts["tie"]) / len(ok) if ok else None
        return {**counts, "win_rate_a": rate, "n": len(ok), "n_failed": len(results) - len(ok)}
    scores = [r.score for r in results if getattr(r, "score", None) is not None]
    mean = sum(scores) / len(scores) if scores else None
    return {"mean": mean, "n": len(scores), "n_failed": len(results) - len(scores)}
