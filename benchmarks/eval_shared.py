"""Evaluate a model on the public datasets of ../shared/data with the configs in examples/eval/,
time each run, and write the figures as a Markdown table into docs/benchmarks.md.

    python benchmarks/eval_shared.py                          # default model, every config
    python benchmarks/eval_shared.py --only gsm8k,sst2 --limit 5
    python benchmarks/eval_shared.py --model runs/my-run --out /tmp/bench.md

Each config runs through `tunesmith.api.evaluate` (progress bars on) from the repository root,
so the configs' `../shared/data/...` paths resolve wherever the script is started. A dataset
whose files are absent is skipped with the reason printed. The table goes between the marker
comments `<!-- eval-shared:start -->` and `<!-- eval-shared:end -->` of the output file (the
section is appended when the markers are missing); rows of datasets not run this time are
kept from the previous table, marked with the date they were measured. The table is printed too.

Evaluations re-run by default (the point is timing); --use-cache reuses a cached result with
the same settings, and its row then reports the generation time recorded with it.
Timings depend on the machine and on what else runs on it: the load average at the start and
at the end is recorded beside them. On a machine busy with other work, --threads 1 avoids
threads of one operation waiting for each other (several times faster there).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

CONFIG_DIR = ROOT / "examples" / "eval"
DEFAULT_OUT = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- eval-shared:start -->", "<!-- eval-shared:end -->"
_DATA_TAG = "eval-shared:data"
SECTION_TITLE = "## Evaluation of the default model on public datasets"
PACKAGES = ("tunesmith", "torch", "transformers", "sacrebleu", "rouge-score", "numpy")
SCALE_100 = {"bleu", "chrf", "chrf_sentence"}  # sacrebleu metrics are on a 0-100 scale
PROXIES = {"reference_similarity"}


# ------------------------------------------------------------------ environment

def only_names(value: str | None, choices, what: str) -> list[str]:
    """`--only a,b` checked against `choices` (every one when not given); an unknown name exits 2
    with one line naming the choices."""
    names = value.split(",") if value else list(choices)
    bad = [n for n in names if n not in choices]
    if bad:
        print(f"--only: unknown {what} {', '.join(bad)} (choose from {', '.join(choices)})", file=sys.stderr)
        raise SystemExit(2)
    return names


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def load_average() -> str:
    try:
        return " / ".join(f"{x:.1f}" for x in os.getloadavg())
    except (OSError, AttributeError):
        return "n/a"


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            if name == "tunesmith":  # a checkout on PYTHONPATH, not installed
                import tunesmith

                out[name] = tunesmith.__version__
    return out


def git_revision() -> str | None:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        return rev.stdout.strip() + ("+modified" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment(model: str, limit: str | None) -> dict:
    import torch

    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{os.cpu_count()} CPU cores, {cpu_model()}; torch threads {torch.get_num_threads()}",
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "os": platform.platform(terse=True),
        "model": model,
        "limit": limit or "per config",
        "versions": versions(),
        "git": git_revision(),
        "load_start": load_average(),
    }


# ------------------------------------------------------------------ running

def config_files(only: list[str] | None) -> list[Path]:
    files = sorted(CONFIG_DIR.glob("*.yaml"))
    if only:
        known = {f.stem: f for f in files}
        missing = [o for o in only if o not in known]
        if missing:
            raise SystemExit(f"--only: no config named {', '.join(missing)} in {CONFIG_DIR.relative_to(ROOT)} "
                             f"(have: {', '.join(known)})")
        files = [known[o] for o in only]
    return files


def missing_files(cfg) -> list[str]:
    paths = [cfg.data, cfg.reference_file, cfg.ids_file, cfg.shots_from, cfg.domain_corpus, cfg.ood_data]
    return [p for p in paths if p and not Path(p).exists()]


def run_one(path: Path, model: str, overrides: list[str], force: bool) -> dict:
    """One config: a table row (dict) with the result, or with the reason it was skipped."""
    from tunesmith import api
    from tunesmith.errors import TunesmithError
    from tunesmith.eval.config import load_eval_config

    name = path.stem
    try:
        cfg = load_eval_config(path, overrides)
    except TunesmithError as e:
        return {"dataset": name, "status": f"invalid config: {e}"}
    name = cfg.dataset_name
    if absent := missing_files(cfg):
        return {"dataset": name, "task": cfg.task, "status": f"skipped: {', '.join(absent)} not found (the shared datasets live in ../shared/data)"}
    print(f"\n=== {name} ({cfg.task}) from {path.relative_to(ROOT)}", flush=True)
    t0 = time.perf_counter()
    try:
        r = api.evaluate(model, str(path), overrides, progress=True, force=force)
    except TunesmithError as e:
        return {"dataset": name, "task": cfg.task, "status": f"failed: {e}"}
    except Exception as e:  # a bug, not bad data: show it, and go on with the other datasets
        import traceback

        traceback.print_exc()
        return {"dataset": name, "task": cfg.task, "status": f"failed: {type(e).__name__}: {e}"}
    wall = time.perf_counter() - t0
    from tunesmith.eval.report import format_result

    print(format_result(r), flush=True)
    cached = bool(r.get("cached"))
    return {
        "dataset": name, "task": r["task"], "n": r["n"], "status": "ok", "cached": cached,
        "primary": r["primary_metric"], "metrics": r["metrics"],
        "wall_s": None if cached else round(wall, 1),
        "gen_s": r.get("seconds"),
        "s_per_item": round((r["seconds"] if cached else wall) / max(r["n"], 1), 3),
        "result": r.get("path"),
    }


# ------------------------------------------------------------------ rendering

def fmt_value(name: str, v: float) -> str:
    return f"{v:.1f}" if name in SCALE_100 else f"{v:.3f}"


def fmt_ci(name: str, m: dict) -> str:
    return f"{fmt_value(name, m['value'])} [{fmt_value(name, m['low'])}, {fmt_value(name, m['high'])}]"


def fmt_time(s: float | None) -> str:
    if s is None:
        return "cached"
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def render_table(rows: list[dict], env: dict) -> str:
    head = ["| dataset | task | n | primary metric [95% CI] | other metrics | s / item | wall time |",
            "|---|---|---:|---|---|---:|---:|"]
    body, notes = [], []
    for row in rows:
        mark = ""
        if row.get("date") and row["date"] != env["date"]:
            mark = f" ({row['date']})"
            notes.append(row)
        if row.get("status") != "ok":
            body.append(f"| {row['dataset']}{mark} | {row.get('task', '')} | | {row['status']} | | | |")
            continue
        ms = row["metrics"]
        primary = f"{row['primary']} {fmt_ci(row['primary'], ms[row['primary']])}" if row["primary"] in ms else row["primary"]
        others = "; ".join(f"{k}{' (proxy)' if k in PROXIES else ''} {fmt_ci(k, m)}" for k, m in ms.items() if k != row["primary"])
        wall = fmt_time(row.get("wall_s"))
        body.append(f"| {row['dataset']}{mark} | {row['task']} | {row['n']} | {primary} | {others or '-'} | {row['s_per_item']:.2f} | {wall} |")
    v = env["versions"]
    lines = [
        f"- Measured: {env['date']}",
        f"- Machine: {env['machine']}" + (f"; GPU: {env['gpu']}" if env.get("gpu") else "") + f"; {env['os']}",
        f"- Load average (1/5/15 min) at the start: {env['load_start']}; at the end: {env.get('load_end', 'n/a')}",
        f"- Model: `{env['model']}`; items per dataset: {env['limit']} (a seeded random sample, see each config)",
        "- Versions: " + ", ".join(f"{k} {v[k]}" for k in v) + (f"; tunesmith checkout {env['git']}" if env.get("git") else ""),
        "",
        *head, *body,
        "",
        "Intervals: 95% percentile bootstrap over items (corpus BLEU/chrF: items resampled and the corpus score "
        "recomputed). BLEU and chrF are on sacrebleu's 0-100 scale, the rest 0-1. `(proxy)`: sentence-embedding "
        "similarity to the reference, not a judge. s / item and wall time are end to end (model load, generation or "
        "label scoring, tests, metrics) on this machine, from `benchmarks/eval_shared.py`.",
    ]
    if notes:
        lines.append("")
    for row in notes:
        lines.append(f"Row `{row['dataset']}` is from an earlier run ({row['date']}, {row.get('machine', '?')}, model `{row.get('model', '?')}`).")
    return "\n".join(lines)


def previous_rows(text: str, tag: str = _DATA_TAG) -> list[dict]:
    m = re.search(r"<!-- " + tag + r" (.*?) -->", text, re.S)
    if not m:
        return []
    try:
        return json.loads(m.group(1))
    except ValueError:
        return []


def write_section(out: Path, table: str, rows: list[dict], *, start: str = START, end: str = END, tag: str = _DATA_TAG,
                  title: str = SECTION_TITLE) -> None:
    """Put `table` and `rows` (as a JSON comment, read back by previous_rows) between the
    start/end markers of `out`, or append a titled section; written atomically."""
    # `--` may not appear in an HTML comment; outside strings JSON never has it, inside a
    # string the escape \u002d reads back as "-".
    data = json.dumps(rows, ensure_ascii=False).replace("--", "-\\u002d")
    block = f"{start}\n{table}\n<!-- {tag} {data} -->\n{end}"
    text = out.read_text(encoding="utf-8") if out.exists() else ""
    if start in text and end in text and text.index(start) < text.index(end):
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = (text.rstrip() + "\n\n" if text.strip() else "# Benchmarks\n\n") + f"{title}\n\n{block}\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)


def merge(previous: list[dict], new: list[dict]) -> list[dict]:
    """This run's rows, plus earlier measured rows of datasets not run this time (config order)."""
    done = {r["dataset"] for r in new}
    kept = [r for r in previous if r.get("status") == "ok" and r["dataset"] not in done]
    order = {p.stem: i for i, p in enumerate(sorted(CONFIG_DIR.glob("*.yaml")))}
    return sorted(new + kept, key=lambda r: (order.get(Path(r.get("config", r["dataset"])).stem, len(order)), r["dataset"]))


# ------------------------------------------------------------------ main
def steady_tokens_per_s(run_dir) -> float:
    """A training run's tokens/s over steps 2..N (the first step warms up), from metrics.jsonl:
    each step's tokens are the difference of the cumulative counts, its time tokens / tokens_per_s."""
    steps = [json.loads(x) for x in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    steps = [s for s in steps if "tokens_per_s" in s]
    toks = [b["tokens"] - a["tokens"] for a, b in zip(steps, steps[1:])]
    secs = [t / max(b["tokens_per_s"], 1e-9) for t, b in zip(toks, steps[1:])]
    return sum(toks) / max(sum(secs), 1e-9)



def main(argv=None) -> int:
    from tunesmith.models.builtins import DEFAULT_MODEL

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"model or run to evaluate (default: {DEFAULT_MODEL})")
    p.add_argument("--limit", help="items per dataset, overriding each config's limit (a number, or 'all')")
    p.add_argument("--only", help="comma-separated config names, e.g. gsm8k,sst2 (default: every examples/eval/*.yaml)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="Markdown file to update (default: docs/benchmarks.md)")
    p.add_argument("--output-dir", help="where a bare model's run directory with the results goes (default: runs/ in the repository)")
    p.add_argument("--use-cache", action="store_true", help="reuse cached results with the same settings instead of re-running")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice, one per core); 1 is far faster on a busy machine, "
                   "where threads of one op wait for each other")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra evaluation override for every config (e.g. batch_size=8)")
    a = p.parse_args(argv)

    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    out = Path(a.out).resolve()  # relative to where the script was started
    model = a.model
    if Path(model).exists():  # a run directory or model path given relative to the caller
        model = str(Path(model).resolve())
    output_dir = str(Path(a.output_dir).resolve()) if a.output_dir else None
    os.chdir(ROOT)  # the configs' data paths are relative to the repository root

    overrides = list(a.set)
    if a.limit is not None:
        if a.limit.lower() in ("all", "none", "null", "0"):
            overrides.append("limit=null")
        elif a.limit.isdigit():
            overrides.append(f"limit={int(a.limit)}")
        else:
            p.error(f"--limit: expected a number or 'all', got {a.limit!r}")
    if output_dir:
        overrides.append(f"output_dir={output_dir}")
    only = [x.strip().removesuffix(".yaml") for x in a.only.split(",") if x.strip()] if a.only else None
    files = config_files(only)

    env = environment(model, a.limit)
    rows = []
    for path in files:
        row = run_one(path, model, overrides, force=not a.use_cache)
        row.update(date=env["date"], machine=env["machine"], model=model, config=str(path.relative_to(ROOT)))
        if row["status"] != "ok":
            print(f"\n--- {row['dataset']}: {row['status']}", flush=True)
        rows.append(row)
    env["load_end"] = load_average()

    previous = previous_rows(out.read_text(encoding="utf-8")) if out.exists() else []
    all_rows = merge(previous, rows)
    table = render_table(all_rows, env)
    print("\n" + table)
    write_section(out, table, [r for r in all_rows if r.get("status") == "ok"])
    print(f"\nwritten to {out}")
    failed = [r["dataset"] for r in rows if r["status"].startswith(("failed", "invalid"))]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

