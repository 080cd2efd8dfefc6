"""`tunesmith serve`: runs and models behind an OpenAI-compatible HTTP API, answering exactly as
the study evaluated them (every request goes through `tunesmith.answering`).

- `engine.py`: the model pool (LoRA runs on one base share its weights) and the batching worker;
- `handlers.py` / `completion.py`: what the worker computes for each kind of request;
- `app.py` / `routes.py` / `schemas.py`: the FastAPI routes, errors and request bodies.

FastAPI on uvicorn (with sse-starlette for streaming) does all the HTTP: they are maintained,
widely deployed, and handle keep-alive, chunked bodies and graceful shutdown correctly; see
docs/serving.md.

    engine = build(["runs/lora-a", "runs/lora-b"])
    run(engine, host="127.0.0.1", port=8000)             # blocks; SIGTERM drains and exits
    with BackgroundServer(engine) as srv: srv.base_url   # tests and benchmarks: a free port
"""

from __future__ import annotations

import logging
import threading
import time

from tunesmith.serve.engine import Engine, load_models

__all__ = ["BackgroundServer", "Engine", "build", "run"]

GRACEFUL_S = 300  # longest wait for in-flight requests on shutdown


def build(models: list[str], names: list[str] | None = None, *, max_batch: int = 32, max_queue: int = 256,
          precision: str = "fp32") -> Engine:
    """Load every model (once per shared base) and return the engine serving them under their names."""
    from tunesmith.errors import TunesmithError

    if not models:
        raise TunesmithError("serve: name at least one run directory or model")
    return Engine(load_models([str(m) for m in models], names, precision), max_batch=max_batch, max_queue=max_queue)


def _config(engine: Engine, host: str, port: int, api_key: str | None, log_level: str):
    import uvicorn

    from tunesmith.serve.app import create_app

    return uvicorn.Config(create_app(engine, api_key=api_key), host=host, port=port, log_level=log_level,
                          timeout_graceful_shutdown=GRACEFUL_S, lifespan="on")


def run(engine: Engine, *, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None, log_level: str = "info") -> None:
    """Serve until SIGINT/SIGTERM: then stop accepting connections, let in-flight requests
    finish (up to GRACEFUL_S), finish the queue and exit."""
    import uvicorn

    logging.getLogger("tunesmith.serve").setLevel(logging.INFO)
    uvicorn.Server(_config(engine, host, port, api_key, log_level)).run()


class BackgroundServer:
    """The server on a free loopback port in a background thread (for tests and benchmarks)."""

    def __init__(self, engine: Engine, *, api_key: str | None = None, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
        import uvicorn

        self.engine = engine
        self.server = uvicorn.Server(_config(engine, host, port, api_key, log_level))
        self.thread = threading.Thread(target=self.server.run, name="tunesmith-serve-http", daemon=True)
        self.host = host

    @property
    def port(self) -> int:
        return self.server.servers[0].sockets[0].getsockname()[1]

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def __enter__(self) -> "BackgroundServer":
        self.thread.start()
        deadline = time.time() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.time() > deadline:
                raise RuntimeError("the background server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(GRACEFUL_S)
