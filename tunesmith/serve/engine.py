"""The server's model pool and its one worker thread: which weights answer for each model name,
and how pending requests become batches.

Model pool. Every served name gets an `Answerer` (tunesmith.answering), so a request is answered
by the same code, system prompt and recipe as `tunesmith eval` / `generate`. LoRA runs (and
prompting or retrieval runs, and plain models) whose weights sit on the same base directory share
one copy of the base weights: the first adapter wraps the base in a PeftModel, the others are
added with `load_adapter`, and the worker selects one with `set_adapter` (or `disable_adapter()`
for the base itself) before each batch. A stacked chain (a run trained on a run: adapters merged
below the top one) or a full fine-tune has its own weights and is loaded separately, as is a
classification-head run.

Worker. Requests become `Job`s on a bounded queue (full: `Overloaded`, the route answers 503).
One thread takes the oldest job and every other pending job with the same batch key (same model,
same kind, same greedy settings), up to `max_batch` items, and answers them in one call. Greedy
chat batches go through `generate_batch`, whose left padding makes a batched answer equal the
single-request one (tested); a sampling request (temperature > 0) is never batched with another,
so its seed alone decides its output. One thread also means no two batches ever race on which
adapter is active.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import itertools
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tunesmith.answering import Answerer, Answering
from tunesmith.errors import TunesmithError

log = logging.getLogger("tunesmith.serve")


class Overloaded(Exception):
    """The queue is full (503, retry later)."""


class ShuttingDown(Exception):
    """The server is stopping and takes no new work (503)."""


@dataclass
class Served:
    """One model name of the server."""

    name: str
    spec: str
    answerer: Answerer
    adapter: str | None = None  # adapter to activate in a shared PeftModel; None: the weights as loaded
    shared: bool = False  # the model object is a PeftModel shared with other names

    @property
    def how(self) -> Answering:
        return self.answerer.how

    @property
    def kind(self) -> str:
        return "classification" if self.how.is_head else "chat"

    @property
    def max_context(self) -> int:
        cfg = self.answerer.model.config
        return int(getattr(cfg, "max_position_embeddings", None) or 2048)

    def active(self):
        """Context in which the shared model computes with this name's weights."""
        model = self.answerer.model
        if not self.shared:
            return contextlib.nullcontext()
        if self.adapter is None:
            return model.disable_adapter()
        model.set_adapter(self.adapter)
        return contextlib.nullcontext()

    def describe(self) -> dict:
        return {"id": self.name, "object": "model", "created": 0, "owned_by": "tunesmith", "kind": self.kind,
                "spec": self.spec, "regimen": self.how.regimen,
                "endpoints": ["/v1/classifications"] if self.how.is_head else ["/v1/chat/completions", "/v1/completions"]}


def model_names(specs: list[str], names: list[str] | None = None) -> list[str]:
    """The name of each served spec: the i-th `--name`, else the run directory's (or model
    directory's) name, a .gguf file's stem, or a built-in's name."""
    names = list(names or [])
    if len(names) > len(specs):
        raise TunesmithError(f"{len(names)} --name given for {len(specs)} model(s); give at most one name per model, in order")
    out = []
    for i, spec in enumerate(specs):
        p = Path(spec)
        default = p.stem if p.suffix == ".gguf" else (p.resolve().name if p.exists() else spec)
        name = names[i] if i < len(names) else default
        if not name or name in out:
            raise TunesmithError(f"model name {name!r} is {'empty' if not name else 'used twice'}; "
                                 "name each served model with --name NAME (given in the order of the models)")
        out.append(name)
    return out


def load_models(specs: list[str], names: list[str] | None = None, precision: str = "fp32") -> dict[str, Served]:
    """Load every spec once. In fp32, LoRA (and weightless) runs on one base directory share its
    weights; in bf16 each run gets its own merged copy, as evaluation loads it (an adapter kept
    in float32 beside a bf16 base would answer slightly differently from what was measured)."""
    from tunesmith.models.loading import inference_precision, load_model, load_tokenizer, resolve_model

    names = model_names(specs, names)
    precision = inference_precision(precision)
    served: dict[str, Served] = {}
    groups: dict[str, list[tuple[str, str, Answering, Any]]] = collections.defaultdict(list)
    for name, spec in zip(names, specs):
        how = Answering.of(spec)
        if how.is_head or precision == "bf16":
            served[name] = Served(name, spec, Answerer.load(spec, precision=precision))
            continue
        ref = resolve_model(spec)
        if ref.base is not None or ref.full_weights is not None:  # stacked chain or full weights: own copy
            model, tok, ref = load_model(ref)
            served[name] = Served(name, spec, Answerer(how, model, tok, ref))
            continue
        groups[str(ref.path.resolve())].append((name, spec, how, ref))
    for members in groups.values():
        model, adapters = _load_shared(members)
        for (name, spec, how, ref), adapter in zip(members, adapters):
            served[name] = Served(name, spec, Answerer(how, model, load_tokenizer(ref), ref), adapter=adapter,
                                  shared=any(a is not None for a in adapters))
    return {n: served[n] for n in names}


def _load_shared(members) -> tuple[Any, list[str | None]]:
    """One base model with every member's adapter loaded under its own name."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(members[0][3].path, dtype=torch.float32, attn_implementation="sdpa")
    adapters: list[str | None] = []
    loaded: dict[str, str] = {}  # adapter directory -> adapter name (a run served under two names loads once)
    for i, (_, _, _, ref) in enumerate(members):
        if ref.adapter is None:
            adapters.append(None)
            continue
        key = str(Path(ref.adapter).resolve())
        if key not in loaded:
            loaded[key] = f"a{i}"  # peft adapter names become module keys: no dots or slashes
            if len(loaded) == 1:
                from peft import PeftModel

                model = PeftModel.from_pretrained(model, ref.adapter, adapter_name=loaded[key])
            else:
                model.load_adapter(ref.adapter, adapter_name=loaded[key])
        adapters.append(loaded[key])
    model.eval()
    return model, adapters


@dataclass
class Job:
    """One request's work. `items` are what the handler batches (conversations, prompts, texts);
    the handler returns one result per item."""

    model: Served
    kind: str  # chat | stream | complete | classify
    items: list
    key: tuple  # jobs with equal keys may share a batch
    options: dict = field(default_factory=dict)
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    on_piece: Callable[[str], None] | None = None  # stream jobs: called with each piece, then with None


_ids = itertools.count()


def unique_key() -> tuple:
    return ("alone", next(_ids))


class Engine:
    """A bounded queue of jobs and the worker thread that answers them in batches."""

    def __init__(self, models: dict[str, Served], *, max_batch: int = 32, max_queue: int = 256):
        self.models = models
        self.max_batch = max_batch
        self.max_queue = max_queue
        self._queue: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name="tunesmith-serve-worker", daemon=True)
        self.stats = {"batches": 0, "items": 0, "max_batch_seen": 0}

    def start(self) -> "Engine":
        if not self._thread.is_alive():
            self._thread.start()
        return self

    def submit(self, job: Job) -> concurrent.futures.Future:
        with self._cond:
            if self._closing:
                raise ShuttingDown("the server is shutting down")
            if len(self._queue) >= self.max_queue:
                raise Overloaded(f"server overloaded: {len(self._queue)} requests are waiting (limit {self.max_queue}); retry later")
            self._queue.append(job)
            self._cond.notify()
        return job.future

    def pending(self) -> int:
        with self._cond:
            return len(self._queue)

    def close(self, timeout: float | None = None) -> None:
        """Refuse new jobs, finish the queued ones, stop the worker."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _take(self) -> list[Job] | None:
        with self._cond:
            while not self._queue:
                if self._closing:
                    return None
                self._cond.wait()
            first = self._queue.popleft()
            batch, size = [first], len(first.items)
            if first.key[0] != "alone":
                for job in list(self._queue):
                    if job.key == first.key and size + len(job.items) <= self.max_batch:
                        self._queue.remove(job)
                        batch.append(job)
                        size += len(job.items)
            return batch

    def _loop(self) -> None:
        from tunesmith.serve import handlers

        while (batch := self._take()) is not None:
            live = [j for j in batch if j.future.set_running_or_notify_cancel()]
            if not live:
                continue
            self.stats["batches"] += 1
            n = sum(len(j.items) for j in live)
            self.stats["items"] += n
            self.stats["max_batch_seen"] = max(self.stats["max_batch_seen"], n)
            try:
                with live[0].model.active():
                    results = handlers.HANDLERS[live[0].kind](live)
                for job, res in zip(live, results):
                    if isinstance(res, Exception):
                        job.future.set_exception(res)
                    else:
                        job.future.set_result(res)
            except Exception as err:  # handed to each request; the route answers with one line
                if not isinstance(err, TunesmithError):
                    log.error("batch of %d %s request(s) for %s failed: %s: %s", len(live), live[0].kind,
                              live[0].model.name, type(err).__name__, str(err).splitlines()[0] if str(err) else "")
                for job in live:
                    if not job.future.done():
                        job.future.set_exception(err)
            finally:
                for job in live:
                    if job.on_piece is not None:
                        job.on_piece(None)
