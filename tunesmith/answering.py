"""The one place that turns a run (or any model spec) into something that answers.

Evaluation, `tunesmith generate` and `chat`, the server, export and the judge all go through
here, so that what is served or exported cannot drift from what a study measured:

- `Answering.of(spec)` reads, without loading weights, *how* a run answers: its kind (a causal
  LM, or a classification head), the system prompt it was trained with, and a prompting or
  retrieval run's recipe (template, few-shot turns, retrieved passages).
- `Answering.messages(questions)` gives the chat messages for single questions exactly as
  evaluation builds them; `Answering.chat(history)` does the same for a multi-turn conversation
  (the recipe shapes the last user turn; a system message given by the caller wins over the
  run's, as it does for `tunesmith eval --system`).
- `Answerer.load(spec)` adds the weights and tokenizer (`models.loading`, or the head's loader
  for a head run) and answers: `generate`, `stream`, `classify`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from tunesmith.errors import TunesmithError
from tunesmith.runs import run_system_prompt


@dataclass
class Answering:
    """How a model spec answers (no weights loaded)."""

    spec: str
    run_dir: Path | None
    regimen: str | None  # None for a plain model (built-in name, HF directory, GGUF file)
    system: str | None  # the system prompt the run was trained or evaluated with
    recipe: object | None  # tunesmith.prompting.Recipe of a prompting or retrieval run

    @classmethod
    def of(cls, spec: str | Path) -> "Answering":
        from tunesmith.prompting import Recipe

        spec = str(spec)
        p = Path(spec)
        if not (p / "run.json").is_file():
            return cls(spec, None, None, None, None)
        meta = json.loads((p / "run.json").read_text())
        return cls(spec, p, meta.get("regimen"), run_system_prompt(spec), Recipe.load(p))

    @property
    def is_head(self) -> bool:
        return self.regimen == "head"

    def _user_only(self, system: str | None) -> list[dict]:
        system = system if system is not None else self.system
        return [{"role": "system", "content": system}] if system else []

    def messages(self, questions: list[str], system: str | None = None) -> list[list[dict]]:
        """Chat messages for each question, ending with its user turn, as evaluation asks it."""
        if self.is_head:
            raise TunesmithError(f"{self.spec} is a classification-head run: it predicts labels, not text")
        if self.recipe is not None:
            return self.recipe.apply(list(questions), system)[0]
        return [self._user_only(system) + [{"role": "user", "content": q}] for q in questions]

    def retrieve(self, questions: list[str], system: str | None = None) -> tuple[list[list[dict]], list[list]]:
        """messages() plus each question's retrieved passages (empty lists without retrieval)."""
        if self.recipe is not None:
            return self.recipe.apply(list(questions), system)
        return self.messages(questions, system), [[] for _ in questions]

    def chat(self, history: list[dict]) -> list[dict]:
        """A conversation (OpenAI-style messages ending with a user turn) as the run answers it.

        A single user turn gives exactly `messages([question])`. Earlier turns are kept as they
        were said; a prompting or retrieval run's recipe (system, shots, template, passages)
        shapes the last user turn."""
        if not history or history[-1].get("role") != "user":
            raise TunesmithError("a conversation must end with a user message")
        system = history[0]["content"] if history[0].get("role") == "system" else None
        rest = [m for m in history if m.get("role") != "system"]
        if self.recipe is None:
            return self._user_only(system) + rest
        first = self.messages([rest[-1]["content"]], system)[0]  # [system?, shots..., templated question]
        return first[:-1] + rest[:-1] + [first[-1]]


@dataclass
class Answerer:
    """A loaded model that answers as its run does."""

    how: Answering
    model: object
    tok: object
    ref: object = None
    labels: list[str] | None = None  # head runs: the label of each class index
    max_length: int = 512  # head runs: texts are truncated to this many tokens, as in training

    @classmethod
    def load(cls, spec: str | Path, device: str | None = None, precision: str = "fp32") -> "Answerer":
        """`precision`: fp32, bf16, or auto (bf16 where the hardware has bf16 units). In bf16 a
        LoRA adapter is merged into the base first (in float32), so that no float32 side path
        slows decoding and the weights are those an HF export holds."""
        how = Answering.of(spec)
        if how.is_head:
            from tunesmith.models.classifier import load_head

            model, tok, labels, max_length = load_head(how.run_dir, device=device)
            return cls(how, model, tok, labels=labels, max_length=max_length)
        from tunesmith.models.loading import inference_precision, load_model

        precision = inference_precision(precision, device)
        model, tok, ref = load_model(how.spec, merge_adapter=precision == "bf16", precision=precision)
        if device is not None:
            model.to(device)
        return cls(how, model, tok, ref)

    def _causal(self) -> None:
        if self.how.is_head:
            raise TunesmithError(f"{self.how.spec} is a classification-head run: it predicts labels (use classify)")

    def generate(self, conversations: list[list[dict]], settings=None, *, batch_size: int = 16, progress: bool = False) -> list[str]:
        """Answer conversations already shaped by `how.messages` / `how.chat`."""
        from tunesmith.generation import generate_batch

        self._causal()
        return generate_batch(self.model, self.tok, conversations, settings, batch_size=batch_size, progress=progress)

    def answer(self, questions: list[str], settings=None, *, system: str | None = None, batch_size: int = 16) -> list[str]:
        return self.generate(self.how.messages(questions, system), settings, batch_size=batch_size)

    def stream(self, history: list[dict], settings=None) -> Iterator[str]:
        from tunesmith.generation import stream_reply

        self._causal()
        yield from stream_reply(self.model, self.tok, self.how.chat(history), settings)

    def classify(self, texts: list[str], batch_size: int = 16) -> list[dict]:
        """For a head run: {label, probability, probabilities: {label: p}} per text."""
        if not self.how.is_head:
            raise TunesmithError(f"{self.how.spec} is not a classification-head run: it answers in text (use generate)")
        from tunesmith.models.classifier import predict_probs

        probs = predict_probs(self.model, self.tok, list(texts), self.max_length, batch_size)
        out = []
        for row in probs.tolist():
            best = max(range(len(row)), key=row.__getitem__)
            out.append({"label": self.labels[best], "probability": row[best],
                        "probabilities": dict(zip(self.labels, row))})
        return out
