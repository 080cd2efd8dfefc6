"""Render normalised records into token ids and a loss mask, through the tokenizer's own chat
template, so that training, evaluation and serving all see the same text.

Loss masking: by default only assistant tokens are trained (the answer and its end-of-turn
token). We find them by rendering each conversation prefix and taking the character span the
assistant turn adds, then mapping characters to tokens with the tokenizer's offsets.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunesmith.errors import TunesmithError

IGNORE = -100  # label value that cross-entropy skips

LOSS_ON = ("assistant", "last", "all")


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]  # IGNORE where the token is context only

    @property
    def n_trained(self) -> int:
        return sum(1 for y in self.labels if y != IGNORE)


def classification_as_prompt_completion(row: dict) -> dict:
    """A classification record (text, label) as the question/answer example SFT and few-shot
    prompting learn from: the text is the prompt and the label the answer. One data file thus
    serves every arm of a study; `tunesmith data preview` shows this form."""
    return {"prompt": row["text"], "completion": str(row["label"])}


def to_messages(row: dict, dtype: str, system_prompt: str | None = None) -> list[dict]:
    """The chat turns of a normalised record (without the answer for prompt_only); a
    classification record reads as its prompt/completion form."""
    if dtype == "classification":
        row, dtype = classification_as_prompt_completion(row), "prompt_completion"
    if dtype == "messages":
        msgs = [dict(m) for m in row["messages"]]
    elif dtype in ("prompt_completion", "prompt_only", "preference"):
        msgs = []
        if row.get("system"):
            msgs.append({"role": "system", "content": row["system"]})
        msgs.extend(dict(m) for m in row.get("context") or [])  # earlier turns of a multi-turn preference prompt
        msgs.append({"role": "user", "content": row["prompt"]})
        if dtype == "prompt_completion":
            msgs.append({"role": "assistant", "content": row["completion"]})
    else:
        raise TunesmithError(f"dataset type '{dtype}' has no chat form (expected messages, prompt_completion, prompt_only or preference)")
    if system_prompt and msgs[0]["role"] != "system":
        msgs.insert(0, {"role": "system", "content": system_prompt})
    return msgs


def _render(tok, messages: list[dict], add_generation_prompt: bool = False) -> str:
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def prompt_text(tok, messages: list[dict]) -> str:
    """The text a model continues to answer: the conversation plus the assistant header."""
    return _render(tok, messages, add_generation_prompt=True)


def _assistant_spans(tok, messages: list[dict], loss_on: str) -> tuple[str, list[tuple[int, int]]]:
    full = _render(tok, messages)
    if loss_on == "all":
        return full, [(0, len(full))]
    idx = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if loss_on == "last":
        idx = idx[-1:]
    spans = []
    for i in idx:
        before = _render(tok, messages[:i], add_generation_prompt=True)
        upto = _render(tok, messages[: i + 1])
        if not (full.startswith(upto) and upto.startswith(before)):
            raise TunesmithError(
                "the model's chat template renders conversations inconsistently (a prefix is not a prefix); "
                "set data.loss_on: all to train on every token"
            )
        # The newline after the end-of-turn token belongs to the template, not the answer.
        spans.append((len(before), len(upto.rstrip())))
    return full, spans


def render_chat(tok, messages: list[dict], loss_on: str = "assistant") -> Example:
    """Tokenize a conversation; labels keep only the tokens inside the trained spans."""
    text, spans = _assistant_spans(tok, messages, loss_on)
    # The template writes special tokens (BOS, turn markers) as text: do not add them twice.
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    labels = []
    for tid, (start, end) in zip(enc["input_ids"], enc["offset_mapping"]):
        # Overlap, not containment: a token may straddle the boundary (SentencePiece puts the
        # space before the answer's first word into that word's token); it is still output.
        inside = any(start < b and end > a for a, b in spans)
        labels.append(tid if inside else IGNORE)
    return Example(list(enc["input_ids"]), labels)


def render_text(tok, text: str) -> Example:
    """Raw text for continued pre-training: every token is trained, the document ends with EOS."""
    ids = list(tok(text)["input_ids"])  # lets the tokenizer add BOS where its model expects one
    if tok.eos_token_id is not None:
        ids.append(tok.eos_token_id)
    return Example(ids, list(ids))


def fit_length(ex: Example, max_length: int) -> tuple[Example, bool]:
    """`ex` cut to `max_length` tokens, and whether the cut fell on the prompt side.

    Cutting the end keeps the prompt whole; but when the first trained token lies past
    `max_length` that would leave nothing to train (the example silently lost), so the window
    moves right instead: all of a short answer with the end of its prompt, or the first half
    of a long answer after a half-window of prompt."""
    first = next((i for i, y in enumerate(ex.labels) if y != IGNORE), None)
    if first is None or first < max_length:
        return Example(ex.input_ids[:max_length], ex.labels[:max_length]), False
    start = min(len(ex.input_ids) - max_length, first - max_length // 2)
    return Example(ex.input_ids[start:start + max_length], ex.labels[start:start + max_length]), True


def encode_rows(
    rows: list[dict], dtype: str, tok, *, max_length: int, system_prompt: str | None = None, loss_on: str = "assistant"
) -> tuple[list[Example], dict]:
    """Encode a dataset. Over-long examples are cut to `max_length` at the end, or, when the
    answer starts past `max_length`, at the start of the prompt (so the answer is kept);
    stats count both ("truncated" all, "prompt_cut" the latter) and the rare example with
    nothing to train ("dropped")."""
    out, stats = [], {"n": len(rows), "truncated": 0, "prompt_cut": 0, "dropped": 0}
    for row in rows:
        if dtype == "text":
            ex = render_text(tok, row["text"])
        else:
            ex = render_chat(tok, to_messages(row, dtype, system_prompt), loss_on)
        if len(ex.input_ids) > max_length:
            stats["truncated"] += 1
            ex, cut_prompt = fit_length(ex, max_length)
            stats["prompt_cut"] += int(cut_prompt)
        if ex.n_trained < 1:
            stats["dropped"] += 1
            continue
        out.append(ex)
    return out, stats


def preview(tok, ex: Example, mark: tuple[str, str] = ("[[", "]]")) -> str:
    """The example's text with each trained run of tokens wrapped in markers."""
    parts, in_span, buf = [], False, []

    def flush():
        if buf:
            s = tok.decode(buf)
            parts.append(f"{mark[0]}{s}{mark[1]}" if in_span else s)
            buf.clear()

    for tid, y in zip(ex.input_ids, ex.labels):
        trained = y != IGNORE
        if trained != in_span:
            flush()
            in_span = trained
        buf.append(tid)
    flush()
    return "".join(parts)
