"""Write the tunesmith data files of the example studies and regimen benchmarks from the public
datasets in ../shared/data (never copied into the repository): seeded samples in the layouts
the study reads, with the same prompt wording for training and evaluation.

    python examples/prepare_shared.py                      # all of them, into data-shared/
    python examples/prepare_shared.py --only sst2,gsm8k    # some
    python examples/prepare_shared.py --shared /path/to/shared/data --out /tmp/prepared

Per dataset (folder data-shared/<name>/; the sizes are the defaults, set by --n-train/--n-test):
  sst2/      train.jsonl (prompt/completion: SFT and few-shot pool), cls_train.jsonl (text/label:
             the head), test.jsonl (text/label: every arm), from SST-2 train / test.
  pubmedqa/  the 500 PQA-L questions outside the official test ids for training, a sample of the
             500 test ids for test (doc_id = the PubMed id), and corpus.jsonl: the 1,000 abstracts
             without their conclusions, for retrieval. The question is asked closed-book (no
             abstract in the prompt): retrieval has to find it.
  gsm8k/     train.jsonl (the question with the math task's instruction -> the reference solution,
             calculator annotations <<...>> removed; GRPO reads the same file, scoring the number
             after '####'), test.jsonl (question, answer: the eval adds the instruction).
  hh_rlhf/   pref_train.jsonl / pref_test.jsonl: helpful-base pairs read by tunesmith's HH layout
             (prompt = last Human turn, context = the turns before), records with defects dropped
             and counted.
  multi30k/  train.jsonl (500 caption pairs from Multi30K train: the translation prompt -> German),
             test.jsonl (80 of test_2016_flickr: text, reference; the study's eval.prompt words it).
  hh_chat/   HH-RLHF helpful-base dialogues (chosen side) up to 800 characters, disjoint: test.jsonl
             (60 conversations: the model answers the last Human turn, the chosen reply is the
             reference), train.jsonl (300 whole dialogues as messages: SFT, few-shot pool),
             pref_train.jsonl (150 pairs: DPO).
  creative/  writing instructions (poems, emails, posts, stories...; code and data tasks excluded)
             with their human-written outputs from selfinstruct_user_oriented, alpaca_seed_tasks and
             alpaca_sample100:
             test.jsonl (30: prompt, reference), train.jsonl (the rest, up to 80: prompt/completion).
  demo/      the generated demo domain (40 facts; no public data): the base-vs-instruct study.

A dataset whose folder is absent is skipped with the reason; exit status 0 unless nothing at all
could be prepared.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
from pathlib import Path

SST2_PROMPT = "What is the sentiment of this movie review? Answer with one word: positive or negative.\n\nReview: {sentence}"
PUBMEDQA_PROMPT = "{question}\nAnswer with one word: yes, no or maybe."
# The math task's default instruction (tunesmith.eval.tasks.DEFAULT_PROMPTS["math"]): training
# prompts carry it exactly as evaluation adds it.
GSM8K_SUFFIX = "\nSolve step by step, then give the final answer on the last line as '#### <number>'."
MULTI30K_PROMPT = "Translate this English sentence into German:\n{text}"
HH_MAX_CHARS = 800  # longer dialogues are dropped: they dominate CPU training and generation time
CREATIVE_MAX_WORDS = 200
DEMO_FACTS = 40
DEFAULTS = {"sst2": (1000, 300), "pubmedqa": (500, 200), "gsm8k": (400, 100), "hh_rlhf": (200, 200),
            "multi30k": (500, 80), "hh_chat": (300, 60), "creative": (80, 30), "demo": (0, 0)}


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    os.replace(tmp, path)


def _sample(rows: list, n: int | None, seed: int) -> list:
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    return rows[:n] if n else rows


def _tsv(path: Path) -> list[tuple[str, str]]:
    out = []
    for ln in path.read_text(encoding="utf-8").split("\n"):
        if ln.strip():
            sentence, label = ln.rsplit("\t", 1)  # headerless: sentence, then 0/1
            out.append((sentence, {"0": "negative", "1": "positive"}[label.strip()]))
    return out


def prep_sst2(src: Path, out: Path, n_train: int, n_test: int, seed: int) -> dict:
    train = _sample(_tsv(src / "train.tsv"), n_train, seed)
    test = _sample(_tsv(src / "test.tsv"), n_test, seed)
    _write(out / "train.jsonl", [{"prompt": SST2_PROMPT.format(sentence=s), "completion": y} for s, y in train])
    _write(out / "cls_train.jsonl", [{"text": SST2_PROMPT.format(sentence=s), "label": y} for s, y in train])
    _write(out / "test.jsonl", [{"text": SST2_PROMPT.format(sentence=s), "label": y} for s, y in test])
    return {"train": len(train), "test": len(test)}


def _as_list(v) -> list[str]:
    if isinstance(v, list):
        return v
    import ast

    return list(ast.literal_eval(v))  # the file stores Python-literal lists as strings


def prep_pubmedqa(src: Path, out: Path, n_train: int, n_test: int, seed: int) -> dict:
    data = json.loads((src / "ori_pqal.json").read_text(encoding="utf-8"))
    test_ids = set(json.loads((src / "test_ground_truth.json").read_text(encoding="utf-8")))
    train_ids = _sample(sorted(k for k in data if k not in test_ids), n_train, seed)
    sample_test = _sample(sorted(test_ids), n_test, seed)

    def q(k):
        return PUBMEDQA_PROMPT.format(question=data[k]["QUESTION"])

    _write(out / "train.jsonl", [{"prompt": q(k), "completion": data[k]["final_decision"]} for k in train_ids])
    _write(out / "cls_train.jsonl", [{"text": q(k), "label": data[k]["final_decision"]} for k in train_ids])
    _write(out / "test.jsonl", [{"text": q(k), "label": data[k]["final_decision"], "doc_id": k} for k in sample_test])
    # Abstracts without the conclusion (LONG_ANSWER), as PubMedQA's reasoning-required setting gives them.
    _write(out / "corpus.jsonl", [{"id": k, "text": "\n".join(_as_list(v["CONTEXTS"]))} for k, v in sorted(data.items())])
    return {"train": len(train_ids), "test": len(sample_test), "corpus": len(data)}


def prep_gsm8k(src: Path, out: Path, n_train: int, n_test: int, seed: int) -> dict:
    def read(name):
        return [json.loads(x) for x in (src / name).read_text(encoding="utf-8").splitlines() if x.strip()]

    train = _sample(read("train.jsonl"), n_train, seed)
    test = _sample(read("test.jsonl"), n_test, seed)
    # GRPO offers `completion` to its rewards as `answer`: numeric_match reads the number after '####'.
    _write(out / "train.jsonl", [{"prompt": r["question"] + GSM8K_SUFFIX, "completion": re.sub(r"<<[^>]*>>", "", r["answer"])}
                                 for r in train])
    _write(out / "test.jsonl", [{"prompt": r["question"], "answer": r["answer"]} for r in test])
    return {"train": len(train), "test": len(test)}


def prep_hh_rlhf(src: Path, out: Path, n_train: int, n_test: int, seed: int) -> dict:
    from tunesmith.data.schemas import read_dataset

    ds, problems = read_dataset(src / "helpful-base_test.jsonl", "preference")
    rows = _sample([r.data for r in ds.records], None, seed)
    keep = ("prompt", "context", "chosen", "rejected")
    rows = [{k: r[k] for k in keep} for r in rows]
    _write(out / "pref_train.jsonl", rows[:n_train])
    _write(out / "pref_test.jsonl", rows[n_train:n_train + n_test])
    return {"train": min(n_train, len(rows)), "test": len(rows[n_train:n_train + n_test]), "dropped_defective": len(problems)}


def _lines(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def prep_multi30k(src: Path, out: Path, n_train: int, n_test: int, seed: int) -> dict:
    train = _sample(list(zip(_lines(src / "train.en"), _lines(src / "train.de"))), n_train, seed)
    test = _sample(list(zip(_lines(src / "test_2016_flickr.en"), _lines(src / "test_2016_flickr.de"))), n_test, seed)
    _write(out / "train.jsonl", [{"prompt": MULTI30K_PROMPT.format(text=en), "completion": de} for en, de in train])
    # text/reference: the study's eval.prompt (the same MULTI30K_PROMPT) words the question
    _write(out / "test.jsonl", [{"text": en, "reference": de} for en, de in test])
    return {"train": len(train), "test": len(test)}


def prep_hh_chat(src: Path, out: Path, n_train: int, n_test: int, seed: int) -> dict:
    """HH-RLHF helpful-base dialogues: the chosen side as conversations. Disjoint openings for the
    test (answer the last Human turn; the chosen reply is the reference), SFT (whole chosen
    dialogues) and DPO (pairs, n_train // 2), after one seeded shuffle; long dialogues dropped."""
    from tunesmith.data.schemas import read_dataset

    ds, problems = read_dataset(src / "helpful-base_test.jsonl", "preference")
    rows = [r.data for r in ds.records]
    rows = [r for r in rows if sum(len(m["content"]) for m in r["context"]) + len(r["prompt"]) + len(r["chosen"]) <= HH_MAX_CHARS]
    # HH holds several pairs of one conversation (the same opening, other continuations): one per
    # opening, and each opening in one split only, so no test conversation is trained on.
    first: dict[str, dict] = {}
    for r in rows:
        first.setdefault((r["context"][0]["content"] if r["context"] else r["prompt"]).strip().lower(), r)
    rows = _sample(list(first.values()), None, seed)

    def conv(r):
        return [dict(m) for m in r["context"]] + [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["chosen"]}]

    test, train, pref = rows[:n_test], rows[n_test:n_test + n_train], rows[n_test + n_train:n_test + n_train + n_train // 2]
    _write(out / "test.jsonl", [{"messages": conv(r)} for r in test])
    _write(out / "train.jsonl", [{"messages": conv(r)} for r in train])
    _write(out / "pref_train.jsonl", [{k: r[k] for k in ("prompt", "context", "chosen", "rejected")} for r in pref])
    return {"train": len(train), "test": len(test), "pref_train": len(pref), "dropped_defective": len(problems)}


_WRITING = re.compile(r"\b(write|compose|draft|poem|story|letter|e-?mail|essay|tweet|post|slogan|haiku|lyrics|song|blog|joke|"
                      r"speech|limerick|scene|toast|invitation|caption|headline|bio|pitch)\b", re.I)
_NOT_WRITING = re.compile(r"\b(code|function|program|python|javascript|script|sql|excel|regex|table|json|html|calculat\w*|"
                          r"translate|math|summari[sz]e|classify|extract|analy[sz]e|answer)\b", re.I)


def _writing_tasks(path: Path, source: str) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":  # alpaca_tiny.json: a list of {instruction, input, output}
        records = [{"id": str(i), "instruction": r["instruction"], "instances": [{"input": r["input"], "output": r["output"]}]}
                   for i, r in enumerate(json.loads(text))]
    else:
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
    out = []
    for r in records:
        if not _WRITING.search(r["instruction"]) or _NOT_WRITING.search(r["instruction"]):
            continue
        for inst in r["instances"][:1]:
            words = len(inst["output"].split())
            if 8 <= words <= CREATIVE_MAX_WORDS:
                prompt = r["instruction"] + (f"\n\n{inst['input']}" if inst["input"].strip() else "")
                out.append({"prompt": prompt, "reference": inst["output"], "source": f"{source}:{r['id']}"})
    return out


def prep_creative(src: Path, out: Path, n_train: int, n_test: int, seed: int) -> dict:
    """Writing instructions (poems, emails, posts, stories...) with their reference outputs, from the
    self-instruct user-oriented set, the Alpaca seed tasks and the Alpaca sample (src: the shared data root)."""
    rows = []
    for folder, name in (("selfinstruct_user_oriented", "user_oriented_instructions.jsonl"),
                         ("alpaca_seed_tasks", "seed_tasks.jsonl"), ("alpaca_sample100", "alpaca_tiny.json")):
        if (src / folder / name).exists():
            rows += _writing_tasks(src / folder / name, folder)
    rows = _sample(rows, None, seed)
    test, train = rows[:n_test], rows[n_test:n_test + n_train]
    _write(out / "test.jsonl", test)
    _write(out / "train.jsonl", [{"prompt": r["prompt"], "completion": r["reference"]} for r in train])
    return {"train": len(train), "test": len(test)}


def prep_demo(src: Path, out: Path, n_train: int, n_test: int, seed: int) -> dict:
    """The demo domain (generated, no public data): the base-vs-instruct study's data."""
    from tunesmith.demo.domain import write_domain

    paths = write_domain(out, seed=seed, n_facts=DEMO_FACTS)
    return {k: sum(1 for _ in open(p, encoding="utf-8")) for k, p in paths.items() if k in ("qa_train", "qa_test", "corpus")}


PREPARE = {"sst2": prep_sst2, "pubmedqa": prep_pubmedqa, "gsm8k": prep_gsm8k, "hh_rlhf": prep_hh_rlhf,
           "multi30k": prep_multi30k, "hh_chat": prep_hh_chat, "creative": prep_creative, "demo": prep_demo}
# Where each dataset's source lies under --shared (None: generated, needs nothing).
SOURCES = {"hh_chat": "hh_rlhf", "creative": ".", "demo": None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shared", default="../shared/data", help="folder of the public datasets (default ../shared/data)")
    p.add_argument("--out", default="data-shared", help="where to write (default data-shared/, git-ignored)")
    p.add_argument("--only", help=f"comma-separated subset of {','.join(PREPARE)}")
    p.add_argument("--n-train", type=int, help="training records per dataset (default per dataset)")
    p.add_argument("--n-test", type=int, help="test records per dataset (default per dataset)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    names = a.only.split(",") if a.only else list(PREPARE)
    unknown = [n for n in names if n not in PREPARE]
    if unknown:
        print(f"--only: unknown dataset(s) {', '.join(unknown)} (choose from {', '.join(PREPARE)})", file=sys.stderr)
        return 2
    done = 0
    for name in names:
        where = SOURCES.get(name, name)
        src = Path(a.shared) / where if where else Path(a.shared)
        if where is not None and not src.is_dir():
            print(f"{name}: skipped ({src} is absent)")
            continue
        n_train, n_test = a.n_train or DEFAULTS[name][0], a.n_test or DEFAULTS[name][1]
        counts = PREPARE[name](src, Path(a.out) / name, n_train, n_test, a.seed)
        print(f"{name}: {Path(a.out) / name}  " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        done += 1
    return 0 if done else 1


if __name__ == "__main__":
    sys.exit(main())
