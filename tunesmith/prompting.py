"""Prompt recipes: how a prompting or retrieval "run" turns a question into chat messages.

`prompt` and `rag` runs train no weights; their run directory holds recipe.json (system prompt,
user template, few-shot examples, retrieval settings) plus shots.jsonl and index/. Evaluation,
generation and chat call `Recipe.apply()`, so the exact prompt a study measured is the one a
user gets when serving the run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tunesmith.errors import TunesmithError

RECIPE_VERSION = 1


@dataclass
class Recipe:
    system: str | None = None
    template: str = "{question}"
    shots: list[dict] = field(default_factory=list)  # [{"user", "assistant"}]: the fixed set, or the pool
    shot_mode: str = "none"  # none | fixed | similar
    k: int = 0
    rag: dict | None = None  # {"method", "top_k", "template"}; the index lives in <run>/index
    run_dir: Path | None = None
    _retriever: object = None
    _pool_vectors: object = None

    def save(self, run_dir: Path) -> None:
        from tunesmith.atomic import write_json_atomic

        write_json_atomic(Path(run_dir) / "recipe.json", {
            "schema_version": RECIPE_VERSION, "system": self.system, "template": self.template,
            "shot_mode": self.shot_mode, "k": self.k, "shots": self.shots, "rag": self.rag})

    @classmethod
    def load(cls, run_dir: str | Path) -> "Recipe | None":
        p = Path(run_dir) / "recipe.json"
        if not p.exists():
            return None
        d = json.loads(p.read_text())
        if d.get("schema_version", 0) > RECIPE_VERSION:
            raise TunesmithError(f"{p}: written by a newer tunesmith; upgrade tunesmith")
        return cls(system=d["system"], template=d["template"], shots=d["shots"], shot_mode=d["shot_mode"],
                   k=d["k"], rag=d["rag"], run_dir=Path(run_dir))

    def _retrieve(self, questions: list[str]) -> list[list]:
        if self._retriever is None:
            from tunesmith.retrieval import Retriever

            self._retriever = Retriever.load(self.run_dir / "index")
        return self._retriever.search(questions, k=self.rag["top_k"])

    def _similar_shots(self, questions: list[str]) -> list[list[dict]]:
        from tunesmith.embeddings import cosine_topk, get_embedder

        emb = get_embedder()
        if self._pool_vectors is None:
            self._pool_vectors = emb.encode([s["user"] for s in self.shots])
        idx, _ = cosine_topk(emb.encode(questions), self._pool_vectors, self.k + 1)
        # A question that is itself in the pool must not be its own example.
        return [[self.shots[j] for j in row if self.shots[j]["user"] != q][: self.k] for q, row in zip(questions, idx)]

    def apply(self, questions: list[str], system: str | None = None) -> tuple[list[list[dict]], list[list]]:
        """Messages for each question (ending with its user turn), and the retrieved hits per question."""
        shots = self._similar_shots(questions) if self.shot_mode == "similar" else [self.shots if self.shot_mode == "fixed" else []] * len(questions)
        hits = self._retrieve(questions) if self.rag else [[] for _ in questions]
        system = system if system is not None else self.system
        out = []
        for q, ex, h in zip(questions, shots, hits):
            msgs = [{"role": "system", "content": system}] if system else []
            for s in ex:
                msgs += [{"role": "user", "content": self._user(s["user"], None)}, {"role": "assistant", "content": s["assistant"]}]
            msgs.append({"role": "user", "content": self._user(q, h)})
            out.append(msgs)
        return out, hits

    def _user(self, question: str, hits) -> str:
        if not self.rag:
            return self.template.format(question=question)
        from tunesmith.retrieval import format_passages

        # Few-shot examples carry no passages: only the asked question is retrieved for.
        passages = format_passages(hits) if hits else "(no passages)"
        return self.rag["template"].format(question=question, passages=passages)
