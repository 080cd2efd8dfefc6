"""What the worker thread does with a batch of jobs of one kind (chat, stream, complete, classify).

Chat and stream jobs are answered through the served name's `Answerer` (its `how.chat` shapes the
conversation with the run's system prompt or recipe, exactly as evaluation asks), so served
answers are the evaluated ones. Completion jobs are the raw model (no template, no recipe: the
prompt is the text to continue) and can return token log-probabilities, echoing the prompt, with
the same forward pass and logits as `tunesmith.eval.likelihood`. Each handler returns one result
per job, or an exception instance for a job that alone is at fault.
"""

from __future__ import annotations

from tunesmith.errors import TunesmithError
from tunesmith.generation import GenerationSettings


class ContextTooLong(TunesmithError):
    """The prompt plus max_tokens exceed the model's context (400)."""


def _count(tok, text: str) -> int:
    return len(tok(text, add_special_tokens=False)["input_ids"])


def _shape(job) -> list[dict] | Exception:
    """The conversation as the run answers it, checked against the context length."""
    from tunesmith.data.templating import prompt_text

    how, tok = job.model.how, job.model.answerer.tok
    try:
        conv = how.chat(job.options["history"])
    except TunesmithError as err:
        return err
    n = _count(tok, prompt_text(tok, conv))
    need = n + job.options["settings"].max_new_tokens
    if need > job.model.max_context:
        return ContextTooLong(f"the prompt has {n} tokens and max_tokens asks for {job.options['settings'].max_new_tokens} more, "
                              f"beyond {job.model.name}'s context of {job.model.max_context} tokens; shorten the messages or lower max_tokens")
    job.options["prompt_tokens"] = n
    return conv


def chat(jobs) -> list:
    """One generate_batch call for every conversation of every job (n copies each)."""
    shaped = [_shape(j) for j in jobs]
    ok = [(j, c) for j, c in zip(jobs, shaped) if not isinstance(c, Exception)]
    convs = [c for j, c in ok for _ in range(j.options["n"])]
    answers = []
    if convs:
        answerer, settings = ok[0][0].model.answerer, ok[0][0].options["settings"]
        answers = answerer.generate(convs, settings, batch_size=len(convs))
    out, at = [], 0
    for j, c in zip(jobs, shaped):
        if isinstance(c, Exception):
            out.append(c)
            continue
        mine = answers[at : at + j.options["n"]]
        at += j.options["n"]
        tok, limit = j.model.answerer.tok, j.options["settings"].max_new_tokens
        rows = []
        for text in mine:
            used = _count(tok, text)
            rows.append({"text": text, "completion_tokens": used, "finish_reason": "length" if used >= limit else "stop"})
        out.append({"choices": rows, "prompt_tokens": j.options["prompt_tokens"]})
    return out


def stream(jobs) -> list:
    """A single streamed conversation (stream jobs are never batched): pieces go to on_piece as
    they are generated, cut at the first stop string."""
    (job,) = jobs
    conv = _shape(job)
    if isinstance(conv, Exception):
        return [conv]
    settings = job.options["settings"]
    cut = _StopCutter(settings.stop)
    from tunesmith.generation import stream_reply

    for piece in stream_reply(job.model.answerer.model, job.model.answerer.tok, conv, settings):
        text = cut.feed(piece)
        if text:
            job.on_piece(text)
        if cut.stopped:
            break
    text = cut.flush()
    if text:
        job.on_piece(text)
    used = _count(job.model.answerer.tok, cut.emitted)
    reason = "stop" if cut.stopped or used < settings.max_new_tokens else "length"
    return [{"prompt_tokens": job.options["prompt_tokens"], "completion_tokens": used, "finish_reason": reason}]


class _StopCutter:
    """Streams text up to the first stop string, holding back a possible stop string's start."""

    def __init__(self, stop: list[str]):
        self.stop = [s for s in stop if s]
        self.hold = max((len(s) for s in self.stop), default=1) - 1
        self.buf = ""
        self.emitted = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        self.buf += piece
        hits = [i for i in (self.buf.find(s) for s in self.stop) if i >= 0]
        if hits:
            self.stopped = True
            out, self.buf = self.buf[: min(hits)], ""
        else:
            keep = len(self.buf) - self.hold
            out, self.buf = (self.buf[:keep], self.buf[keep:]) if keep > 0 else ("", self.buf)
        self.emitted += out
        return out

    def flush(self) -> str:
        out, self.buf = ("" if self.stopped else self.buf), ""
        self.emitted += out
        return out


def classify(jobs) -> list:
    answerer = jobs[0].model.answerer
    texts = [t for j in jobs for t in j.items]
    rows = answerer.classify(texts, batch_size=16)  # the batch size `tunesmith generate` uses
    out, at = [], 0
    for j in jobs:
        out.append(rows[at : at + len(j.items)])
        at += len(j.items)
    return out


def complete(jobs) -> list:
    """Raw-text completions: each job's prompts (token ids) continued, n times each, then scored
    when logprobs or echo ask for it."""
    from tunesmith.serve.completion import generate_ids, score

    model, tok = jobs[0].model.answerer.model, jobs[0].model.answerer.tok
    opts = jobs[0].options
    settings: GenerationSettings = opts["settings"]
    prompts = [p for j in jobs for p in j.items for _ in range(j.options["n"])]
    gens = generate_ids(model, tok, prompts, settings) if settings.max_new_tokens > 0 else [([], "length")] * len(prompts)
    want = opts["logprobs"] is not None or opts["echo"]
    scored = score(model, tok, [p + g for p, (g, _) in zip(prompts, gens)], top=opts["logprobs"] or 0) if want else None
    out, at = [], 0
    for j in jobs:
        rows = []
        for _ in range(len(j.items) * j.options["n"]):
            rows.append({"prompt": prompts[at], "generated": gens[at][0], "finish_reason": gens[at][1],
                         "scores": scored[at] if scored else None})
            at += 1
        out.append(rows)
    return out


HANDLERS = {"chat": chat, "stream": stream, "classify": classify, "complete": complete}

