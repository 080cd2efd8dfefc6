"""Text generation: batched (for evaluation) and streaming (for chat).

Prompts are rendered with the same chat template as in training. Batched generation pads on
the left, sorts prompts by length so that each batch wastes little padding, uses the KV cache,
and returns answers in the caller's order. Batch-1 decoding is overhead-bound on CPU (~37 ms
per token for the default model), so evaluation should always batch.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Iterator

import torch

from tunesmith.data.templating import prompt_text


@dataclass
class GenerationSettings:
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int = 0

    def kwargs(self, tok) -> dict:
        kw = {"max_new_tokens": self.max_new_tokens, "pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id}
        if self.stop:
            # Stop decoding at a stop string (answers are also cut there afterwards).
            kw.update(stop_strings=list(self.stop), tokenizer=tok)
        if self.temperature > 0:
            kw.update(do_sample=True, temperature=self.temperature, top_p=self.top_p)
        else:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kw


def _cut_at_stop(text: str, stop: list[str]) -> str:
    cut = len(text)
    for s in stop:
        i = text.find(s)
        if i >= 0:
            cut = min(cut, i)
    return text[:cut].strip()


@torch.no_grad()
def generate_ids(model, tok, texts: list[str], settings: GenerationSettings | None = None, *, batch_size: int = 16,
                 sort: bool = True, progress: bool = False) -> list[list[int]]:
    """The generated token ids of each rendered prompt, in the caller's order (rows may end in
    padding after EOS). Prompts are sorted by length so that a batch pads little, and padded on
    the left so that every row's next token sits at the same position."""
    from tqdm.auto import tqdm

    settings = settings or GenerationSettings()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i])) if sort else list(range(len(texts)))
    out: list[list[int]] = [[] for _ in texts]
    side = tok.padding_side
    tok.padding_side = "left"
    model.eval()
    device = next(model.parameters()).device
    torch.manual_seed(settings.seed)
    try:
        bar = tqdm(total=len(texts), unit="item", desc="generate", disable=not progress)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            enc = tok([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            gen = model.generate(**enc, **settings.kwargs(tok))
            for i, row in zip(idx, gen[:, enc["input_ids"].shape[1] :]):
                out[i] = row.tolist()
            bar.update(len(idx))
        bar.close()
    finally:
        tok.padding_side = side
    return out


def generate_batch(model, tok, conversations: list[list[dict]], settings: GenerationSettings | None = None,
                   *, batch_size: int = 16, progress: bool = False) -> list[str]:
    """Answer each conversation (a list of chat messages ending with the user turn)."""
    settings = settings or GenerationSettings()
    texts = [prompt_text(tok, msgs) for msgs in conversations]
    ids = generate_ids(model, tok, texts, settings, batch_size=batch_size, progress=progress)
    return [_cut_at_stop(tok.decode(row, skip_special_tokens=True), settings.stop) for row in ids]


def stream_reply(model, tok, messages: list[dict], settings: GenerationSettings | None = None) -> Iterator[str]:
    """Yield the reply to a conversation piece by piece as it is generated."""
    from transformers import TextIteratorStreamer

    settings = settings or GenerationSettings(max_new_tokens=256)
    enc = tok(prompt_text(tok, messages), return_tensors="pt", add_special_tokens=False).to(next(model.parameters()).device)
    streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
    torch.manual_seed(settings.seed)
    worker = threading.Thread(target=model.generate, kwargs={**enc, **settings.kwargs(tok), "streamer": streamer}, daemon=True)
    worker.start()
    yield from streamer
    worker.join()
