"""The model card (README.md) written into every export: what the model is and how it was
measured, from the run directory's own records only (run.json, data_manifest.json,
config.yaml, eval/*.json and, for a run of a study, the study's results.json)."""

from __future__ import annotations

import json
import time
from pathlib import Path


def _read_json(p: Path):
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def _fmt_ci(m) -> str:
    if isinstance(m, dict) and "value" in m:
        v = m["value"]
        if "low" in m and "high" in m:
            return f"{v:.4g} (95% CI {m['low']:.4g} to {m['high']:.4g}, n={m.get('n', '?')})"
        return f"{v:.4g}"
    return f"{m:.4g}" if isinstance(m, (int, float)) else str(m)


def _base_lines(meta: dict) -> list[str]:
    rec = meta.get("base")
    lines = [f"- spec: `{meta.get('base_model')}`"]
    while rec and "run" in rec:  # a run trained on top of another run: show the root model
        lines.append(f"- on top of run `{rec['run']}`")
        rec = rec.get("base")
    if not rec:
        return lines + ["- (this run predates base records: no content hash)"]
    if "builtin" in rec or "gguf" in rec:
        lines.append(f"- model: {rec.get('builtin') or rec.get('gguf')}")
        lines.append(f"- GGUF sha256: `{rec.get('gguf_sha256')}`")
        lines.append(f"- float weights dequantized from a {rec.get('dequantized_from')} file (what the run was trained and evaluated on)")
    else:
        lines.append(f"- path: {rec.get('path')}, sha256 `{rec.get('sha256')}`")
    return lines


def _data_lines(run: Path) -> list[str]:
    man = _read_json(run / "data_manifest.json") or {}
    lines = [f"- {role}: `{Path(f['path']).name}` sha256 `{f['sha256']}`" for role, f in man.get("files", {}).items()]
    if man.get("counts"):
        lines.append("- records: " + ", ".join(f"{k} {v}" for k, v in man["counts"].items()))
    return lines or ["- (no data manifest)"]


def _config_lines(run: Path, meta: dict) -> list[str]:
    keys = ("regimen", "adapter", "init_from", "steps", "final_loss", "trainable_params", "trained_tokens",
            "train_seconds", "seed", "shots", "shot_selection", "labels")
    lines = [f"- {k}: {meta[k]}" for k in keys if meta.get(k) not in (None, "", [])]
    try:
        import yaml

        cfg = yaml.safe_load((run / "config.yaml").read_text()) or {}
    except (OSError, ImportError, ValueError):
        cfg = {}
    for section in ("training", "adapter"):
        if isinstance(cfg.get(section), dict):
            short = {k: v for k, v in cfg[section].items() if isinstance(v, (int, float, str, bool)) and v is not None}
            lines.append(f"- {section}: " + ", ".join(f"{k}={v}" for k, v in short.items()))
    return lines


def _eval_lines(run: Path) -> list[str]:
    lines = []
    for p in sorted((run / "eval").glob("*.json")):
        if p.name.count(".") != 1:  # <dataset>.json is the latest of each dataset; keyed copies repeat it
            continue
        ev = _read_json(p) or {}
        metrics = ev.get("metrics") or {}
        sys_note = " (with the run's system prompt)" if ev.get("system") else ""
        lines.append(f"- {ev.get('dataset', p.stem)} ({ev.get('task')}, n={ev.get('n')}){sys_note}:")
        lines += [f"  - {k}: {_fmt_ci(v)}" for k, v in metrics.items() if isinstance(v, (dict, int, float))]
    return lines or ["- (no evaluations in eval/)"]


def study_scores(run: Path) -> tuple[Path, dict] | None:
    """(results.json, this run's arm) when the run belongs to a study."""
    for cand in (run.parent / "results.json", run.parent.parent / "results.json"):
        res = _read_json(cand)
        for arm in (res or {}).get("arms", []) if isinstance(res, dict) else []:
            rd = Path(arm.get("run_dir", ""))
            if rd.name == run.name and (rd.resolve() == run.resolve() or not rd.exists()):
                return cand, arm
    return None


def _study_lines(run: Path) -> list[str]:
    found = study_scores(run)
    if not found:
        return []
    path, arm = found
    lines = ["", "## In its study", "", f"`{path}`: arm `{arm.get('arm')}` (id {arm.get('id')})", ""]
    lines += [f"- {k}: {_fmt_ci(v)}" for k, v in (arm.get("results") or {}).items() if v is not None]
    return lines


def model_card(run: Path, meta: dict, info: dict) -> str:
    """The README.md of an export; `info` is what the exporter wrote (format, quant, files...)."""
    from tunesmith.runs import git_commit

    try:
        from importlib.metadata import version

        ts_version = version("tunesmith")
    except Exception:  # not installed as a distribution (a source checkout on PYTHONPATH)
        ts_version = "unknown"
    git = git_commit()
    out = [f"# {meta.get('name', run.name)}: a tunesmith export", "",
           f"Exported {time.strftime('%Y-%m-%d %H:%M:%S')} from run `{run.resolve()}` as **{info['format']}**"
           f" ({info['quant']}) with tunesmith {ts_version} (commit {git.get('commit')}{', dirty' if git.get('dirty') else ''}).", ""]
    if info.get("default_system"):
        out += ["The chat template uses the run's system prompt when a conversation has no system message:",
                "", "> " + info["default_system"].replace("\n", "\n> "), ""]
    out += ["## Files", ""] + [f"- {f}" for f in info.get("files", [])]
    out += ["", "## Base model", ""] + _base_lines(meta)
    out += ["", "## Training", ""] + _config_lines(run, meta)
    out += ["", "## Data", ""] + _data_lines(run)
    out += ["", "## Evaluation (the run, before export)", ""] + _eval_lines(run)
    out += _study_lines(run)
    out += ["", "## Export", "", "```json", json.dumps({k: v for k, v in info.items() if k not in ("files", "chat_template")},
                                                        indent=2, default=str), "```", ""]
    return "\n".join(out)
