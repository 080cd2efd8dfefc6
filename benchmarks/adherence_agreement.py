"""Agreement of the domain-adherence metric with ground truth on the demo study's answers.

The demo generator knows every fact by construction, so each answer of every demo arm to an
in-domain question can be labelled "asserts only domain facts" or not from the fact tables alone
(tunesmith.demo.adherence_truth, code separate from the metric). This script reads a finished
demo study's answers, labels them, recomputes the metric (tunesmith.eval.grounding, as the study
ran it) and prints accuracy and Cohen's kappa per arm and overall; it also checks that the
metric's values equal those the study stored in each arm's eval/qa_test.json.

    python benchmarks/adherence_agreement.py studies/demo
    python benchmarks/adherence_agreement.py studies/demo --write-fixture tests/fixtures/demo_adherence_sample.jsonl

It also scores constructed answers to the same questions (the right value bare and in a sentence,
another entity's value of the same attribute, an invented name and date, another subject, the
policy's decline, the right value plus an invented source): hard negatives that a model's answers
rarely contain, with the ground truth labels again from the fact tables.

--write-fixture stores every labelled answer (arm, question row, answer, metric, label) as the
fixed sample that tests/test_adherence_agreement.py recomputes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tunesmith.demo.adherence_truth import agreement, label_answers
from tunesmith.demo.domain import build_domain
from tunesmith.demo.quickstart import N_FACTS


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def study_answers(study: Path) -> dict[str, list[dict]]:
    """{arm: [{"id", "question", "answer", "stored"}]} over each arm's answers to data.test."""
    out = {}
    for run in sorted((study / "runs").iterdir()):
        res, samples = run / "eval" / "qa_test.json", run / "eval" / "qa_test.samples.jsonl"
        if not (res.exists() and samples.exists()):
            continue
        adh = json.loads(res.read_text()).get("adherence") or {}
        rows = _jsonl(samples)
        stored = adh.get("per_item") or [None] * len(rows)
        out[run.name] = [{"id": s["id"], "question": s["input"], "answer": s["prediction"], "stored": m}
                         for s, m in zip(rows, stored)]
    return out


def measure(study: Path, k: int) -> tuple[list[dict], dict]:
    """(every labelled answer, {arm: agreement} plus "all")."""
    from tunesmith.eval.grounding import ContentJudge

    dom = build_domain(seed=0, n_facts=N_FACTS)
    by_prompt = {r["prompt"]: r for r in dom.qa_test}
    docs = _jsonl(study / "data" / "corpus.jsonl")
    judge = ContentJudge(docs, k=k)
    rows, table = [], {}
    for arm, items in study_answers(study).items():
        qrows = [by_prompt[i["question"]] for i in items]
        truth = label_answers([i["answer"] for i in items], qrows, dom)
        metric = [d["adheres"] for d in judge.judge_all([i["answer"] for i in items], [i["question"] for i in items])]
        table[arm] = agreement(metric, truth)
        rows += [{"arm": arm, "fact_id": q["fact_id"], "question": i["question"], "answer": i["answer"],
                  "metric": m, "stored": i["stored"], "truth": t} for i, q, m, t in zip(items, qrows, metric, truth)]
    table["all"] = agreement([r["metric"] for r in rows], [r["truth"] for r in rows])
    return rows, table


def constructed(dom) -> tuple[list[str], list[dict]]:
    """(answers, their question rows): 8 constructed answers per held-out question (see the module doc)."""
    facts = {f.fact_id: f for f in dom.facts}
    answers, rows = [], []
    for r in dom.qa_test:
        f = facts[r["fact_id"]]
        other = next(g.answer for g in dom.facts if g.attribute == f.attribute and g.entity != f.entity) \
            if sum(g.attribute == f.attribute for g in dom.facts) > 1 else "1999"
        for a in (f.answer, f"For the {f.entity}, it is {f.answer}.", other, f"For the {f.entity}, it is {other}.",
                  "It was made by John Smith in 1999.", "Paris is the capital of France.",
                  "I can only answer questions about Tarrowind Instruments.", f"{f.answer}, according to John Smith."):
            answers.append(a)
            rows.append(r)
    return answers, rows


def measure_constructed(study: Path, k: int) -> dict:
    from tunesmith.eval.grounding import ContentJudge

    dom = build_domain(seed=0, n_facts=N_FACTS)
    answers, rows = constructed(dom)
    judge = ContentJudge(_jsonl(study / "data" / "corpus.jsonl"), k=k)
    metric = [d["adheres"] for d in judge.judge_all(answers, [r["prompt"] for r in rows])]
    return agreement(metric, label_answers(answers, rows, dom))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("study", type=Path, help="a finished demo study directory (studies/demo)")
    ap.add_argument("--k", type=int, default=2, help="passages per question (the study's eval.adherence_passages)")
    ap.add_argument("--write-fixture", type=Path, help="write the labelled sample here")
    a = ap.parse_args(argv)
    rows, table = measure(a.study, a.k)
    print(f"{'arm':<16}{'n':>5}{'accuracy':>10}{'kappa':>8}{'tp':>5}{'fp':>5}{'fn':>5}{'tn':>5}")
    for arm, t in table.items():
        print(f"{arm:<16}{t['n']:>5}{t['accuracy']:>10.3f}{t['kappa']:>8.3f}{t['tp']:>5}{t['fp']:>5}{t['fn']:>5}{t['tn']:>5}")
    t = measure_constructed(a.study, a.k)
    print(f"{'constructed':<16}{t['n']:>5}{t['accuracy']:>10.3f}{t['kappa']:>8.3f}{t['tp']:>5}{t['fp']:>5}{t['fn']:>5}{t['tn']:>5}")
    differs = [r for r in rows if r["stored"] is not None and r["stored"] != r["metric"]]
    print(f"metric recomputed = stored in the study: {len(rows) - len(differs)} of {len(rows)}")
    for r in (x for x in rows if x["metric"] != x["truth"]):
        print(f"  disagree [{r['arm']}] truth={r['truth']} metric={r['metric']} | {r['question']} | {r['answer']!r}")
    if a.write_fixture:
        a.write_fixture.parent.mkdir(parents=True, exist_ok=True)
        a.write_fixture.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "stored"}) + "\n" for r in rows))
        print(f"wrote {len(rows)} labelled answers to {a.write_fixture}")
    return 1 if differs else 0


if __name__ == "__main__":
    sys.exit(main())
