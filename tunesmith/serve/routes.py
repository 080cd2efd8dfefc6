"""The generating routes: chat completions (plain and streamed as server-sent events),
completions (with logprobs and echo) and classifications. Each turns a validated body into a job
for the engine and the job's result into OpenAI's response shape."""

from __future__ import annotations

import asyncio
import json

from fastapi import FastAPI
from sse_starlette import EventSourceResponse

from tunesmith.serve import schemas as S
from tunesmith.serve.app import STREAM_GRACE_S, APIError, completion_id, run_job, served, settings_of
from tunesmith.serve.engine import Engine, Job, Overloaded, ShuttingDown, unique_key


def add(app: FastAPI, engine: Engine) -> None:
    @app.post("/v1/chat/completions")
    async def chat_completions(req: S.ChatRequest):
        m = served(engine, req.model, "chat")
        if req.tools:
            raise APIError(400, "tools are not supported by tunesmith serve", param="tools")
        if req.logprobs:
            raise APIError(400, "logprobs are not supported on chat completions; use /v1/completions with logprobs", param="logprobs")
        history = [msg.as_dict() for msg in req.messages]
        if history[-1]["role"] != "user":
            raise APIError(400, "messages: the conversation must end with a user message", param="messages")
        settings = settings_of(req, req.max_completion_tokens or req.max_tokens or S.DEFAULT_MAX_TOKENS)
        options = {"history": history, "settings": settings, "n": req.n}
        if req.stream:
            if req.n > 1:
                raise APIError(400, "n > 1 is not supported with stream: true", param="n")
            return _stream(engine, m, options, include_usage=bool((req.stream_options or {}).get("include_usage")))
        key = ("chat", m.name, settings.max_new_tokens, tuple(settings.stop)) if settings.temperature == 0 else unique_key()
        res = await run_job(engine, Job(m, "chat", [history] * req.n, key, options))
        cid, created = completion_id("chatcmpl")
        choices = [{"index": i, "message": {"role": "assistant", "content": c["text"]}, "logprobs": None,
                    "finish_reason": c["finish_reason"]} for i, c in enumerate(res["choices"])]
        used = sum(c["completion_tokens"] for c in res["choices"])
        return {"id": cid, "object": "chat.completion", "created": created, "model": m.name, "choices": choices,
                "usage": {"prompt_tokens": res["prompt_tokens"], "completion_tokens": used, "total_tokens": res["prompt_tokens"] + used}}

    @app.post("/v1/completions")
    async def completions(req: S.CompletionRequest):
        m = served(engine, req.model, "chat")
        if req.stream:
            raise APIError(400, "stream is not supported on /v1/completions; use /v1/chat/completions to stream", param="stream")
        tok = m.answerer.tok
        prompts = _prompt_ids(req.prompt, tok, len(tok))
        if len(prompts) * req.n > S.MAX_INPUTS:
            raise APIError(400, f"{len(prompts)} prompt(s) x n={req.n} exceed {S.MAX_INPUTS} completions per request", param="prompt")
        longest = max(len(p) for p in prompts)
        if longest + req.max_tokens > m.max_context:
            raise APIError(400, f"a prompt of {longest} tokens plus max_tokens {req.max_tokens} exceeds {m.name}'s context of "
                                f"{m.max_context} tokens", code="context_length_exceeded", param="prompt")
        settings = settings_of(req, req.max_tokens)
        options = {"settings": settings, "n": req.n, "logprobs": req.logprobs, "echo": req.echo}
        key = (("complete", m.name, req.max_tokens, tuple(settings.stop), req.logprobs, req.echo)
               if settings.temperature == 0 else unique_key())
        rows = await run_job(engine, Job(m, "complete", prompts, key, options))
        cid, created = completion_id("cmpl")
        choices = [_completion_choice(tok, i, r, req.echo, req.logprobs, settings.stop) for i, r in enumerate(rows)]
        p_used = sum(len(p) for p in prompts) * req.n
        g_used = sum(len(r["generated"]) for r in rows)
        return {"id": cid, "object": "text_completion", "created": created, "model": m.name, "choices": choices,
                "usage": {"prompt_tokens": p_used, "completion_tokens": g_used, "total_tokens": p_used + g_used}}

    @app.post("/v1/classifications")
    async def classifications(req: S.ClassificationRequest):
        m = served(engine, req.model, "classification")
        texts = [req.input] if isinstance(req.input, str) else list(req.input)
        if len(texts) > S.MAX_INPUTS:
            raise APIError(400, f"{len(texts)} inputs exceed {S.MAX_INPUTS} per request", param="input")
        rows = await run_job(engine, Job(m, "classify", texts, ("classify", m.name)))
        return {"object": "list", "model": m.name, "data": [{"index": i, "object": "classification", **r} for i, r in enumerate(rows)]}


def _prompt_ids(prompt, tok, vocab: int) -> list[list[int]]:
    """Token ids of each prompt: strings are tokenized without added special tokens (tunesmith's
    chat template writes any BOS itself); id lists are taken as given."""
    if isinstance(prompt, str):
        prompts = [prompt]
    elif prompt and all(isinstance(x, int) for x in prompt):
        prompts = [list(prompt)]
    else:
        prompts = list(prompt)
    if not prompts or len(prompts) > S.MAX_INPUTS:
        raise APIError(400, f"prompt: give 1 to {S.MAX_INPUTS} prompts", param="prompt")
    out = []
    for p in prompts:
        ids = tok(p, add_special_tokens=False)["input_ids"] if isinstance(p, str) else list(p)
        if not ids:
            raise APIError(400, "prompt: an empty prompt has nothing to continue", param="prompt")
        if any(not 0 <= t < vocab for t in ids):
            raise APIError(400, f"prompt: token ids must be in [0, {vocab})", param="prompt")
        out.append(ids)
    return out


def _completion_choice(tok, index: int, row: dict, echo: bool, logprobs: int | None, stop: list[str]) -> dict:
    from tunesmith.serve.completion import text_of

    prompt, gen = row["prompt"], row["generated"]
    eos = {tok.eos_token_id} if tok.eos_token_id is not None else set()
    text = text_of(tok, gen, eos)
    for s in stop:
        if s and (i := text.find(s)) >= 0:
            text = text[:i]
    prefix = tok.decode(prompt) if echo else ""
    lp = None
    if logprobs is not None or echo:
        toks = (prompt if echo else []) + gen
        start = 0 if echo else len(prompt)
        scores = row["scores"]
        pieces = [tok.decode([t]) for t in toks]
        offsets, at = [], 0
        for p in pieces:
            offsets.append(at)
            at += len(p)
        lp = {"tokens": pieces, "token_logprobs": scores["token_logprobs"][start : start + len(toks)],
              "top_logprobs": (scores["top_logprobs"] or [None] * (start + len(toks)))[start : start + len(toks)] if logprobs else None,
              "text_offset": offsets}
        if logprobs is None:
            lp = None
    return {"index": index, "text": prefix + text, "logprobs": lp, "finish_reason": row["finish_reason"]}


def _stream(engine: Engine, m, options: dict, include_usage: bool):
    """Submit a stream job now (overload and shutdown are plain JSON errors) and answer with SSE."""
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue = asyncio.Queue()
    job = Job(m, "stream", [options["history"]], unique_key(), options,
              on_piece=lambda p: loop.call_soon_threadsafe(pieces.put_nowait, p))
    try:
        engine.submit(job)
    except Overloaded as err:
        raise APIError(503, str(err), type_="server_error", code="overloaded", headers={"Retry-After": "1"}) from None
    except ShuttingDown as err:
        raise APIError(503, str(err), type_="server_error", code="shutting_down") from None
    cid, created = completion_id("chatcmpl")

    def chunk(delta: dict, finish: str | None = None, **extra) -> dict:
        body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": m.name,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], **extra}
        return {"data": json.dumps(body)}

    async def events():
        try:
            yield chunk({"role": "assistant", "content": ""})
            while (piece := await pieces.get()) is not None:
                yield chunk({"content": piece})
            try:
                res = await asyncio.wrap_future(job.future)
            except Exception as err:  # the request failed after the stream began: say so in the stream
                from tunesmith.errors import TunesmithError

                message = str(err) if isinstance(err, TunesmithError) else f"internal error ({type(err).__name__})"
                yield {"data": json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}})}
                return
            yield chunk({}, res["finish_reason"])
            if include_usage:
                used = res["completion_tokens"]
                usage = {"prompt_tokens": res["prompt_tokens"], "completion_tokens": used, "total_tokens": res["prompt_tokens"] + used}
                yield {"data": json.dumps({"id": cid, "object": "chat.completion.chunk", "created": created, "model": m.name,
                                           "choices": [], "usage": usage})}
            yield {"data": "[DONE]"}
        except asyncio.CancelledError:
            job.future.cancel()
            raise

    return EventSourceResponse(events(), shutdown_grace_period=STREAM_GRACE_S)
