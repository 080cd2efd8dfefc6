"""Per-task evaluation logic: turn records into chat prompts with references, and score the
model's answers item by item (per-item scores feed confidence intervals and paired tests)."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from tunesmith.errors import TunesmithError

# Where each standard field is looked for when `fields` does not name it.
FALLBACKS = {
    "prompt": ("prompt", "question", "instruction", "input", "text", "sentence", "dialogue", "QUESTION"),
    "answer": ("answer", "answers", "reference", "output", "completion", "final_decision"),
    "label": ("label", "final_decision"),
    "reference": ("references", "reference", "summary", "target", "answer", "output", "completion", "LONG_ANSWER"),
    "tests": ("tests", "test_list", "test"),
    "setup": ("setup", "test_setup_code"),
}
DEFAULT_PROMPTS = {
    "math": "{prompt}\nSolve step by step, then give the final answer on the last line as '#### <number>'.",
    "code": "{prompt}\nYour code should pass these tests:\n{tests}\nWrite the Python code in a ```python block.",
}
# code with show_tests false: the tests grade the answer and are not part of the task (HumanEval).
CODE_PROMPT_NO_TESTS = "{prompt}\nWrite the Python code in a ```python block."


@dataclass
class Item:
    id: str
    messages: list[dict]  # the conversation up to and including the user turn
    refs: list[str] = field(default_factory=list)
    label: str | None = None
    tests: list[str] = field(default_factory=list)
    setup: str = ""
    display: str = ""  # the question as a person reads it
    retrieved: list[str] = field(default_factory=list)  # source ids of the passages a rag run inserted
    context: list[dict] = field(default_factory=list)  # chat: the turns before the last user turn


def _get(rec: dict, name: str, fields: dict, required: bool = True):
    keys = [k.strip() for k in fields[name].split(",")] if name in fields else [k for k in FALLBACKS[name] if k in rec]
    vals = [rec[k] for k in keys if k in rec and rec[k] is not None]
    if not vals:
        if required:
            raise TunesmithError(f"record {rec.get('id')}: no '{name}' field (fields present: {', '.join(sorted(rec))}); map it with --field {name}=FIELD")
        return None
    return vals if len(keys) > 1 else vals[0]


def _text(v) -> str:
    return "\n".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)


def _render_prompt(rec: dict, cfg) -> str:
    if not cfg.prompt and (turn := _chat_context(rec, cfg)):
        return turn[1]
    template = cfg.prompt or DEFAULT_PROMPTS.get(cfg.task)
    if cfg.task == "code" and not cfg.prompt and getattr(cfg, "show_tests", None) is False:
        template = CODE_PROMPT_NO_TESTS
    if not template:
        return _text(_get(rec, "prompt", cfg.fields))
    view = {k: _text(v) for k, v in rec.items()}
    for std in ("prompt", "tests"):
        if "{" + std + "}" in template and std not in view:
            view[std] = _text(_get(rec, std, cfg.fields))
    try:
        return template.format_map(view)
    except KeyError as e:
        raise TunesmithError(f"prompt template uses {{{e.args[0]}}} but the records have {', '.join(sorted(rec))}") from e


def _answer_turn(rec: dict, cfg) -> str:
    """What a few-shot example shows as the assistant's answer."""
    if cfg.task == "classification":
        return _label(rec, cfg)
    if cfg.task == "code":
        return "```python\n" + _text(rec.get("code", "")) + "\n```"
    if cfg.task == "chat" and _turns(rec) is not None:
        return _turns(rec)[-1]["content"]
    key = "answer" if cfg.task in ("qa", "math") else "reference"
    v = _get(rec, key, cfg.fields)
    return _text(v[0] if isinstance(v, list) else v)


def _label(rec: dict, cfg) -> str:
    from tunesmith.data.schemas import MISSING_MARKERS

    raw = str(_get(rec, "label", cfg.fields))
    # Blank, NaN and "N/A" mean "no label": scored as a class they would be silent nonsense.
    if not raw.strip() or raw.strip().lower() in MISSING_MARKERS and raw not in (cfg.label_map or {}):
        raise TunesmithError(f"{cfg.data}: record {rec.get('id')}: label is missing ({raw!r}); "
                             "give every eval record a label or drop the record")
    return (cfg.label_map or {}).get(raw, raw)


def _turns(rec: dict) -> list[dict] | None:
    """A chat record's conversation: OpenAI-style `messages` ending with the reference reply
    (the assistant's last turn), or None for a prompt/reference record."""
    msgs = rec.get("messages")
    if not isinstance(msgs, list) or not msgs:
        return None
    if not all(isinstance(m, dict) and m.get("role") in ("system", "user", "assistant") and isinstance(m.get("content"), str)
               for m in msgs):
        raise TunesmithError(f"record {rec.get('id')}: messages must be {{role: system|user|assistant, content: text}} objects")
    if len(msgs) < 2 or msgs[-1]["role"] != "assistant" or msgs[-2]["role"] != "user":
        raise TunesmithError(f"record {rec.get('id')}: a chat test conversation must end with a user turn and the "
                             "reference reply (assistant); the model answers that last user turn")
    return msgs


def _chat_context(rec: dict, cfg) -> tuple[list[dict], str] | None:
    """(earlier turns, last user turn) of a multi-turn chat record; None for other records."""
    msgs = _turns(rec) if cfg.task == "chat" else None
    if msgs is None:
        return None
    return [dict(m) for m in msgs[:-2] if m["role"] != "system"], msgs[-2]["content"]


def _transcript(context: list[dict], question: str) -> str:
    """The conversation as a person (or a judge) reads it: earlier turns, then the last user turn."""
    lines = [f"{'User' if m['role'] == 'user' else 'Assistant'}: {m['content']}" for m in context]
    return "\n".join(lines + [f"User: {question}"]) if lines else question


def _refs(rec: dict, cfg) -> list[str]:
    if cfg.task in ("qa", "math"):
        v = _get(rec, "answer", cfg.fields)
        refs = [_text(x) for x in v] if isinstance(v, list) else [_text(v)]
        return refs + [str(a) for a in rec.get("aliases", [])]
    if cfg.task == "chat" and _turns(rec) is not None:
        return [_turns(rec)[-1]["content"]]
    if cfg.task in ("summarization", "translation", "chat", "creative"):
        v = _get(rec, "reference", cfg.fields)
        return [_text(x) for x in v] if isinstance(v, list) else [_text(v)]
    return []


def _shot_pool(records, cfg):
    if not cfg.shots:
        return []
    if cfg.shots_from:
        from tunesmith.eval.sources import read_records

        return read_records(type(cfg)(**{**cfg.__dict__, "data": cfg.shots_from, "limit": None, "format": "auto"}))
    return records


def _choose_shots(records, pool, cfg) -> list[list[dict]]:
    """For each record, the few-shot examples (never the record itself)."""
    if not cfg.shots:
        return [[] for _ in records]
    if cfg.shot_selection == "similar":
        from tunesmith.embeddings import cosine_topk, get_embedder

        emb = get_embedder()
        q = emb.encode([_render_prompt(r, cfg) for r in records])
        p = emb.encode([_render_prompt(r, cfg) for r in pool])
        idx, _ = cosine_topk(q, p, min(len(pool), cfg.shots + 1))
        return [[pool[j] for j in row if pool[j]["id"] != r["id"]][: cfg.shots] for r, row in zip(records, idx)]
    rng = random.Random(cfg.seed)
    out = []
    for r in records:
        cands = [x for x in pool if x["id"] != r["id"]]
        out.append(rng.sample(cands, min(cfg.shots, len(cands))))
    return out


def build_items(records: list[dict], cfg, system: str | None) -> list[Item]:
    shots = _choose_shots(records, _shot_pool(records, cfg), cfg)
    items = []
    for rec, ex in zip(records, shots):
        msgs = [{"role": "system", "content": system}] if system else []
        for s in ex:
            turn = _chat_context(s, cfg)  # a multi-turn example shows its last exchange
            msgs += [{"role": "user", "content": turn[1] if turn else _render_prompt(s, cfg)},
                     {"role": "assistant", "content": _answer_turn(s, cfg)}]
        turn = _chat_context(rec, cfg)
        context, question = turn if turn else ([], _render_prompt(rec, cfg))
        msgs += context + [{"role": "user", "content": question}]
        item = Item(id=rec["id"], messages=msgs, refs=_refs(rec, cfg), display=_transcript(context, question), context=context)
        if cfg.task == "classification":
            item.label = _label(rec, cfg)
        if cfg.task == "code":
            t = _get(rec, "tests", cfg.fields)
            item.tests = [str(x) for x in t] if isinstance(t, list) else [str(t)]
            item.setup = _text(_get(rec, "setup", cfg.fields, required=False) or "")
        items.append(item)
    return items


_CODE_BLOCK = re.compile(r"```(?:python|py)?\s*\n(.*?)(?:```|$)", re.S)


def extract_code(text: str) -> str:
    """The first fenced code block of an answer, or the whole answer when there is none."""
    m = _CODE_BLOCK.search(text)
    return m.group(1) if m else text
