"""Copy the results of finished studies into docs/benchmarks.md: for each study directory, its
verdict, results table (95% intervals, paired differences against the baseline), secondary
metrics, costs and wall time, rendered by the study report's own functions, between the
markers `<!-- study:<name>:start -->` and `<!-- study:<name>:end -->` (appended when missing).

    tunesmith study examples/studies/sst2.yaml           # first run the study
    python benchmarks/studies.py studies/sst2            # then record it
    python benchmarks/studies.py studies/sst2 studies/pubmedqa --out /tmp/b.md

Nothing is re-measured here: the figures are the study's results.json, as its report shows them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from eval_shared import write_section  # noqa: E402

DEFAULT_OUT = ROOT / "docs" / "benchmarks.md"


def render(results: dict, config_path: str | None) -> str:
    from tunesmith.study.report import cost_table, extra_table, md_escape, md_table, results_table
    from tunesmith.study.verdict import fmt_duration, verdict, verdict_paragraph

    v = verdict(results)
    env = results.get("env") or {}
    git = (env.get("git") or {}).get("commit", "unknown")
    pk, hw = env.get("packages") or {}, env.get("hardware") or {}
    lines = [f"- Study `{results['study']}`" + (f" (`{config_path}`)" if config_path else "") +
             f"; created {results.get('created')}; tunesmith checkout {str(git)[:10]}; torch {pk.get('torch', '?')}, "
             f"transformers {pk.get('transformers', '?')}",
             f"- Wall time: {fmt_duration(results.get('wall_seconds'))} (training and evaluation of every arm, "
             f"{hw.get('cpu_count', '?')} CPU cores ({hw.get('cpu', '?')}), torch threads {hw.get('torch_threads', '?')})", "",
             f"**Verdict.** {md_escape(verdict_paragraph(v))}", ""]
    lines += [f"- Warning: {md_escape(w)}" for w in v["warnings"]] + ([""] if v["warnings"] else [])
    lines += [md_table(results_table(results)), ""]
    extra = extra_table(results)
    if extra:
        lines += [md_table(extra), ""]
    lines.append(md_table(cost_table(results)))
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("studies", nargs="+", help="study directories (holding results.json)")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--title", action="append", default=[], metavar="NAME=TITLE", help="section title for a study (repeatable)")
    a = p.parse_args(argv)
    titles = dict(t.split("=", 1) for t in a.title)
    for d in a.studies:
        path = Path(d) / "results.json"
        if not path.exists():
            print(f"{path}: no results (run the study first)", file=sys.stderr)
            return 1
        results = json.loads(path.read_text(encoding="utf-8"))
        name = results["study"]
        cfg = f"examples/studies/{name}.yaml" if (ROOT / "examples" / "studies" / f"{name}.yaml").exists() else None
        table = render(results, cfg)
        print(table + "\n")
        write_section(Path(a.out), table, [], start=f"<!-- study:{name}:start -->", end=f"<!-- study:{name}:end -->",
                      tag=f"study:{name}:data", title=f"### {titles.get(name, 'Study: ' + name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
