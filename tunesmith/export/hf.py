"""Export a run as a plain Hugging Face model directory that loads with transformers alone.

- A LoRA run (and every run below it in an `init_from` chain) is merged into the float32
  weights the run was trained on; full and freeze runs are saved as they are. The weights are
  written as safetensors in float32 (the default: bit-for-bit the model tunesmith evaluated),
  float16 or bfloat16.
- The tokenizer goes with its chat template, tunesmith's fallback template included when the
  base had none, so that prompts render exactly as in training. When the run was trained with a
  system prompt, the template uses it whenever a conversation brings no system message of its
  own (as tunesmith does): plain `apply_chat_template([{"role": "user", ...}])` asks the
  question the way the study measured it.
- `generation_config.json`: greedy decoding, the end-of-turn / EOS ids and the pad id tunesmith
  generates with.
- A classification-head run becomes an `AutoModelForSequenceClassification` directory with
  `id2label` / `label2id` (a LoRA head merged) and labels.json.
- A prompting or retrieval run becomes its base model plus `tunesmith_recipe/` (recipe.json,
  shots.jsonl, index/ and a README on how to ask with it); see docs/export.md.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tunesmith.errors import TunesmithError

DTYPES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}
RECIPE_DIR = "tunesmith_recipe"


def with_default_system(template: str, system: str | None) -> str:
    """`template` with `system` as the system message of conversations that bring none.

    The prefix only rebinds `messages`, so the model's own rendering is untouched; the string
    is a JSON literal, which Jinja (transformers, llama-cpp-python, llama.cpp) reads back as is."""
    if not system:
        return template
    literal = json.dumps(system, ensure_ascii=False)
    prefix = ("{% if messages and messages[0]['role'] != 'system' %}"
              "{% set messages = [{'role': 'system', 'content': " + literal + "}] + messages %}{% endif %}")
    return prefix + template


def stop_ids(tok, model_config) -> list[int]:
    """The ids that end an answer: the tokenizer's EOS (what tunesmith stops at) first, then the
    model's own EOS id(s) when they differ."""
    ids = [tok.eos_token_id] if tok.eos_token_id is not None else []
    extra = getattr(model_config, "eos_token_id", None)
    for i in extra if isinstance(extra, list) else [extra]:
        if i is not None and i not in ids:
            ids.append(i)
    return ids


def _generation_config(tok, model_config):
    from transformers import GenerationConfig

    eos = stop_ids(tok, model_config)
    return GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=eos if len(eos) > 1 else eos[0],
                            pad_token_id=tok.pad_token_id, do_sample=False, max_new_tokens=256)


def _to_dtype(model, quant: str):
    import torch

    return model.to(getattr(torch, DTYPES[quant]))


def write_causal(run: Path, dst: Path, quant: str, system: str | None) -> dict:
    """The run's causal LM, every adapter merged, saved to `dst` with tokenizer, template and
    generation config. Returns what was written (for the card)."""
    from tunesmith.models.loading import load_model

    model, tok, ref = load_model(str(run), merge_adapter=True)
    if hasattr(model, "peft_config"):  # merge_and_unload must leave a plain transformers model
        raise TunesmithError(f"{run}: could not merge the adapter into the base weights")
    model = _to_dtype(model, quant)
    model.generation_config = _generation_config(tok, model.config)
    model.config._name_or_path = ""  # no path into this machine's cache
    tok.chat_template = with_default_system(tok.chat_template, system)
    model.save_pretrained(dst)
    tok.save_pretrained(dst)
    return {"kind": "causal", "dtype": DTYPES[quant], "merged_adapters": _count_adapters(ref),
            "eos_token_ids": stop_ids(tok, model.config), "default_system": system}


def _count_adapters(ref) -> int:
    n = 0
    while ref is not None:
        n += ref.adapter is not None
        ref = ref.base
    return n


def write_head(run: Path, dst: Path, quant: str) -> dict:
    """A classification-head run as a sequence-classification model (LoRA head merged)."""
    from tunesmith.atomic import write_json_atomic
    from tunesmith.models.classifier import LABELS_FILE, load_head

    model, tok, labels, max_length = load_head(run, device="cpu")
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model = _to_dtype(model, quant)
    model.config.id2label = dict(enumerate(labels))
    model.config.label2id = {lab: i for i, lab in enumerate(labels)}
    model.config._name_or_path = ""
    model.save_pretrained(dst)
    tok.save_pretrained(dst)
    write_json_atomic(dst / LABELS_FILE, labels)
    write_json_atomic(dst / "tunesmith_head.json", {"labels": labels, "max_length": max_length,
                                                    "encoding": "raw text with the tokenizer's special tokens, truncated to max_length; right padding"})
    return {"kind": "sequence-classification", "dtype": DTYPES[quant], "labels": labels, "max_length": max_length}


RECIPE_README = """# tunesmith recipe: how this model was asked in the study

This export is a prompting/retrieval run: the weights beside this folder are its base model
(adapters of a fine-tuned base merged), and this folder is how each question was put to it.
The chat template already carries the recipe's system prompt as the default system message.

Files
- recipe.json: `system` (system prompt), `template` (user turn; `{question}` is replaced),
  `shot_mode` ("none" | "fixed": the `shots` below every time | "similar": the `k` shots
  whose `user` text is most similar to the question, by cosine of sentence embeddings of
  all-MiniLM-L6-v2), `shots` ([{"user", "assistant"}]), `rag` (null, or {"method", "top_k",
  "template"}: the user turn is `rag.template` with `{question}` and `{passages}`).
- shots.jsonl: the same shots, one {"user", "assistant"} per line.
- index/ (retrieval only): chunks.jsonl (one passage per line), meta.json (method: bm25 or
  embeddings, chunking, hash), embeddings.npy (embedding method only).

How to ask a question (what tunesmith does, `tunesmith.prompting.Recipe.apply`)
1. messages = [system] if system, then for each shot: user = template (or rag.template with
   passages "(no passages)") applied to shot.user, assistant = shot.assistant.
2. retrieval: search index/ for the question's rag.top_k passages; user turn =
   rag.template.format(question=..., passages=numbered passages); else template.format(question=...).
3. Render with the tokenizer's chat template (add_generation_prompt=True), decode greedily,
   stop at the EOS ids in generation_config.json.

With tunesmith installed the same in Python:
    from tunesmith.prompting import Recipe
    messages, passages = Recipe.load("tunesmith_recipe").apply(["your question"])
"""


def write_recipe(run: Path, dst: Path, recipe) -> dict:
    """The recipe folder of a prompting or retrieval run, loadable with `Recipe.load`."""
    from tunesmith.atomic import write_jsonl_atomic, write_text_atomic

    out = dst / RECIPE_DIR
    out.mkdir(parents=True)
    shutil.copy2(run / "recipe.json", out / "recipe.json")
    write_jsonl_atomic(out / "shots.jsonl", recipe.shots)
    if (run / "index").is_dir():
        shutil.copytree(run / "index", out / "index")
    elif recipe.rag:
        raise TunesmithError(f"{run}: a retrieval run without its index/ folder; re-run it")
    write_text_atomic(out / "README.md", RECIPE_README)
    return {"recipe": {"shot_mode": recipe.shot_mode, "shots": len(recipe.shots), "k": recipe.k,
                       "retrieval": (recipe.rag or {}).get("method")}}
