"""The HTTP side of `tunesmith serve`: OpenAI-compatible routes over the engine's job queue.

Why FastAPI on uvicorn, with sse-starlette: they are the well-kept, widely deployed way to speak
HTTP/1.1 correctly from Python (request parsing, keep-alive, chunked bodies, graceful shutdown on
SIGTERM), pydantic validates the bodies, and sse-starlette writes server-sent events the way
OpenAI's streaming clients read them. tunesmith writes no HTTP parsing of its own.

Endpoints: GET /v1/models, POST /v1/chat/completions (streaming with `stream: true`),
POST /v1/completions (logprobs, echo), POST /v1/classifications (head runs), GET /health.
Every error is OpenAI's shape, {"error": {"message", "type", "param", "code"}}, with a 4xx for
anything the client can fix, 503 (+ Retry-After) when the queue is full or the server is
stopping, and one log line (never a traceback) for a 500.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import random
import time
import uuid
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunesmith.errors import TunesmithError
from tunesmith.generation import GenerationSettings
from tunesmith.serve.engine import Engine, Job, Overloaded, Served, ShuttingDown

log = logging.getLogger("tunesmith.serve")

MAX_BODY = 1 << 20  # bytes of one request body
STREAM_GRACE_S = 300.0  # a stream in flight at shutdown gets this long to finish


class APIError(Exception):
    def __init__(self, status: int, message: str, *, type_: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param, self.headers = status, message, type_, code, param, headers


def error_body(status: int, message: str, type_: str = "invalid_request_error", code: str | None = None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _json_error(err: APIError) -> JSONResponse:
    return JSONResponse(error_body(err.status, err.message, err.type, err.code, err.param), status_code=err.status, headers=err.headers)


class Guard:
    """ASGI middleware before any route: the API key (401), JSON content type (415) and body size limit
    (413); and after them, any unexpected exception becomes a one-line log and a JSON 500."""

    def __init__(self, app, api_key: str | None, max_body: int):
        self.app, self.api_key, self.max_body = app, api_key, max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.api_key and scope["path"].startswith("/v1"):
            auth = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            if not hmac.compare_digest(auth.encode(), f"Bearer {self.api_key}".encode()):
                return await self._reply(send, APIError(401, "missing or wrong API key: send the header 'Authorization: Bearer <key>'",
                                                        code="invalid_api_key"))
        if scope["method"] == "POST" and scope["path"].startswith("/v1"):
            ctype = dict(scope["headers"]).get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
            if ctype != "application/json":
                return await self._reply(send, APIError(415, f"content-type must be application/json, not {ctype or 'missing'!r}",
                                                        code="unsupported_media_type"))
        body, more = b"", True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
            if len(body) > self.max_body:
                return await self._reply(send, APIError(413, f"request body over {self.max_body} bytes", code="request_too_large"))
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        started = False

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, replay, tracked_send)
        except Exception as err:  # a bug must cost one log line and a 500, never a traceback
            log.error("%s %s failed: %s: %s", scope["method"], scope["path"], type(err).__name__, str(err).splitlines()[0] if str(err) else "")
            if not started:
                await self._reply(send, APIError(500, f"internal error ({type(err).__name__})", type_="server_error"))

    @staticmethod
    async def _reply(send, err: APIError) -> None:
        payload = json.dumps(error_body(err.status, err.message, err.type, err.code)).encode()
        await send({"type": "http.response.start", "status": err.status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errs = exc.errors()
    if not errs:
        return "invalid request body", None
    e = errs[0]
    loc = [str(x) for x in e.get("loc", ()) if x != "body"]
    if e.get("type") == "json_invalid":
        return "request body is not valid JSON", None
    where = ".".join(loc) or "body"
    more = f" (and {len(errs) - 1} more problem(s))" if len(errs) > 1 else ""
    return f"{where}: {e.get('msg', 'invalid')}{more}", where


def create_app(engine: Engine, *, api_key: str | None = None, max_body: int = MAX_BODY) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app):
        engine.start()
        yield
        await asyncio.get_running_loop().run_in_executor(None, engine.close)

    app = FastAPI(title="tunesmith serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine = engine

    @app.exception_handler(APIError)
    async def _api_error(request, exc: APIError):
        return _json_error(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        message, param = _validation_message(exc)
        return _json_error(APIError(400, message, param=param))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, exc: StarletteHTTPException):
        message = {404: f"unknown endpoint {request.method} {request.url.path}",
                   405: f"method {request.method} not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
        return _json_error(APIError(exc.status_code, message, code={404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)))

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": list(engine.models), "pending": engine.pending()}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [m.describe() for m in engine.models.values()]}

    @app.get("/v1/models/{name:path}")
    async def model(name: str):
        return served(engine, name, None).describe()

    from tunesmith.serve import routes

    routes.add(app, engine)
    app.add_middleware(Guard, api_key=api_key, max_body=max_body)
    return app


def served(engine: Engine, name: str, kind: str | None) -> Served:
    m = engine.models.get(name)
    if m is None:
        raise APIError(404, f"model {name!r} is not served here (served: {', '.join(engine.models)})", code="model_not_found", param="model")
    if kind is not None and m.kind != kind:
        where = "/v1/classifications" if m.kind == "classification" else "/v1/chat/completions or /v1/completions"
        raise APIError(400, f"model {name!r} is a {m.kind} model: use {where}", code="wrong_endpoint", param="model")
    return m


async def run_job(engine: Engine, job: Job):
    """Queue a job and wait for it; errors become APIError."""
    try:
        fut = engine.submit(job)
    except Overloaded as err:
        raise APIError(503, str(err), type_="server_error", code="overloaded", headers={"Retry-After": "1"}) from None
    except ShuttingDown as err:
        raise APIError(503, str(err), type_="server_error", code="shutting_down") from None
    try:
        return await asyncio.wrap_future(fut)
    except TunesmithError as err:
        raise APIError(400, str(err).replace("\n", " ")) from None
    except asyncio.CancelledError:
        fut.cancel()
        raise
    except Exception as err:  # logged once by the worker
        raise APIError(500, f"internal error ({type(err).__name__})", type_="server_error") from None


def settings_of(req, max_tokens: int) -> GenerationSettings:
    try:
        stop = req.stops()
    except ValueError as err:
        raise APIError(400, str(err), param="stop") from None
    temperature = 0.0 if req.temperature is None else req.temperature  # greedy, as tunesmith evaluates
    seed = req.seed if req.seed is not None else random.randrange(2**31)
    return GenerationSettings(max_new_tokens=max_tokens, temperature=temperature, top_p=1.0 if req.top_p is None else req.top_p,
                              stop=stop, seed=seed % (2**32))


def completion_id(prefix: str) -> tuple[str, int]:
    return f"{prefix}-{uuid.uuid4().hex[:24]}", int(time.time())


