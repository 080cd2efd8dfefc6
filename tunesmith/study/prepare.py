"""The data a study's arms actually train on, derived once from the study's data section and
written into `<study>/prepared/` so that every arm, and the cache keys, see the same files.

Three things are derived:

* **Question/answer examples from a classification set.** A data.train of text/label records
  serves every arm: SFT, GRPO and the prompting arms' example pool get its prompt/completion form
  (worded through eval.prompt and eval.label_map on a classification task, as the test is asked),
  and the head arm trains on it directly when no data.classification_train is given.
* **The validation split.** Unless `data.validation` is given, a seeded `data.val_fraction` of
  the training records is carved out (of data.train, preference_train and
  classification_train alike). Training arms report validation loss on it, keep their best
  checkpoint by it and get an overfitting verdict from it; prompting arms never see it (their
  example pool is the carved training part), so it stays free for selection.
* **The out-of-domain policy in each regimen's form.** `policy.examples` (out-of-domain
  questions) become training examples answered with `policy.decline_message` (SFT, GRPO, and the
  prompting arms' example pool), and preference pairs preferring the decline over the question's
  answer (DPO). Prompting arms are also told the policy in their system prompt (see
  StudyPolicy.told). Under policy "answer", examples with an answer are added as ordinary
  question/answer pairs and nothing is declined.

Files are rewritten only when their content changes, so a re-run study keeps its cache keys.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tunesmith.atomic import write_text_atomic

SPLIT_SEED = 0  # the split must not move with the arms' seeds: every seed sees the same validation


@dataclass
class Prepared:
    """Paths of the derived files (None where the study has no such data) and what was done."""

    train: str | None = None
    validation: str | None = None
    preference_train: str | None = None
    preference_validation: str | None = None
    classification_train: str | None = None
    classification_validation: str | None = None
    summary: dict = field(default_factory=dict)  # sizes and sources, for the plan and results.json


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)


def _write(path: Path, rows: list[dict]) -> str:
    text = _jsonl(rows)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        write_text_atomic(path, text)
    return str(path)


def _policy_rows(policy, dtype: str) -> list[dict]:
    """policy.examples as records of `dtype` (prompt_completion, messages or preference)."""
    if not policy.examples:
        return []
    from tunesmith.data.schemas import load_dataset

    rows = load_dataset(policy.examples, accept=("prompt_only", "prompt_completion")).rows()
    out = []
    for r in rows:
        q, a = str(r["prompt"]), r.get("completion", r.get("answer"))
        reply = policy.decline_message if policy.out_of_domain == "decline" else (None if a is None else str(a))
        if dtype == "preference":
            if policy.out_of_domain == "decline" and a is not None:
                out.append({"prompt": q, "chosen": policy.decline_message, "rejected": str(a)})
        elif reply is None:
            continue
        elif dtype == "prompt_only":  # GRPO prompts: the reply is what the reward checks
            out.append({"prompt": q, "answer": reply})
        elif dtype == "messages":
            out.append({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": reply}]})
        else:
            out.append({"prompt": q, "completion": reply})
    return out


def _derive(study, source: str | None, accept: tuple[str, ...], name: str, given_val: str | None,
            add_policy: bool, as_qa: bool = False) -> tuple[str | None, str | None, dict]:
    """(train path, validation path, summary) for one kind of training data. as_qa: the data is
    for question/answer arms, so a classification file is turned into its prompt/completion form."""
    from tunesmith.data.schemas import load_dataset
    from tunesmith.data.splits import split_rows

    if not source:
        return None, None, {}
    ds = load_dataset(source, accept=accept)
    rows = [dict(r) for r in ds.rows()]
    as_pc = as_qa and ds.type == "classification"
    if as_pc:  # a classification set serving question/answer arms: its prompt/completion form
        rows = classification_rows(study, source)
    extra = _policy_rows(study.policy, "prompt_completion" if as_pc else ds.type) if add_policy else []
    rows += extra
    out = study.study_dir / "prepared"  # never the folder of the user's own files
    info = {"source": source, "records": len(rows), "policy_examples": len(extra),
            **({"derived": "prompt/completion from text/label"} if as_pc else {})}
    if given_val:
        info.update(validation_source=given_val, validation_records=len(load_dataset(given_val, accept=accept)))
        return _write(out / f"{name}.jsonl", rows), given_val, info
    train, val = split_rows(rows, study.data.val_fraction, SPLIT_SEED)
    info.update(train_records=len(train), validation_records=len(val), val_fraction=study.data.val_fraction,
                split_seed=SPLIT_SEED)
    return _write(out / f"{name}.jsonl", train), (_write(out / f"{name}_validation.jsonl", val) if val else None), info


def classification_rows(study, source: str) -> list[dict]:
    """A classification file's records as prompt/completion examples, worded as the study's
    evaluation words its questions (eval.prompt, eval.fields, eval.label_map) when the study's task
    is classification, else text -> label (tunesmith.data.templating.classification_as_prompt_completion)."""
    from tunesmith.data.schemas import load_dataset
    from tunesmith.data.templating import classification_as_prompt_completion

    if study.eval.task != "classification":
        return [classification_as_prompt_completion(r) for r in load_dataset(source, "classification").rows()]
    import dataclasses

    from tunesmith.eval.sources import read_records
    from tunesmith.eval.tasks import _label, _render_prompt
    from tunesmith.study.evaluate import test_eval_cfg

    cfg = dataclasses.replace(test_eval_cfg(study), data=source, format="auto", limit=None, shuffle=False)
    return [{"prompt": _render_prompt(r, cfg), "completion": _label(r, cfg)} for r in read_records(cfg)]


def prepare_data(study) -> Prepared:
    """Write the derived training and validation files of `study` (see the module docstring)."""
    d = study.data
    qa_tr, qa_val, qa = _derive(study, d.train, ("prompt_completion", "messages", "prompt_only", "classification"), "train",
                                d.validation, True, as_qa=True)
    pr_tr, pr_val, pr = _derive(study, d.preference_train, ("preference",), "preference_train", None, True)
    # A classification data.train also serves the head arm when no classification_train is given.
    cls_src = d.classification_train or (d.train if qa.get("derived") else None)
    cl_tr, cl_val, cl = _derive(study, cls_src, ("classification",), "classification_train", None, False)
    return Prepared(qa_tr, qa_val, pr_tr, pr_val, cl_tr, cl_val,
                    summary={k: v for k, v in (("train", qa), ("preference_train", pr), ("classification_train", cl)) if v})
