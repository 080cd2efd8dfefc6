"""The run directory, `runs/<name>/`: the contract between train, eval, study and export.

Files: run.json (schema_version, regimen, base model, status), config.yaml (resolved config),
data_manifest.json (files, hashes, counts), env.json (versions, git commit, hardware),
metrics.jsonl (one JSON object per logged step), checkpoints/, model/ (Hugging Face format),
tensorboard/. Later stages read these files and nothing else.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from tunesmith.errors import TunesmithError
from tunesmith.atomic import write_json_atomic, write_text_atomic
from tunesmith.rundir import check_name, failed_start, remove_tree, warn

SCHEMA_VERSION = 1
_PACKAGES = ("tunesmith", "torch", "transformers", "peft", "tokenizers", "safetensors", "numpy", "gguf", "accelerate")


def prepare_run_dir(path: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber a finished or partial run unless asked to continue or replace it.
    A failed start (no checkpoint, not completed) holds nothing to lose: it is replaced."""
    path = Path(path)
    check_name(path.name, "name")
    exists = (path / "run.json").exists()
    stale = exists and not resume and failed_start(path)
    if exists and not (resume or overwrite or stale):
        raise TunesmithError(f"{path} already holds a run; pass --resume to continue it or --overwrite to start over")
    if resume and not exists:
        raise TunesmithError(f"{path}: nothing to resume (no run.json); drop --resume to start this run")
    if (overwrite or stale) and exists and not resume:
        remove_tree(path, path.parent)
    path.mkdir(parents=True, exist_ok=True)


def read_run(path: Path) -> dict:
    p = Path(path) / "run.json"
    if not p.exists():
        raise TunesmithError(f"{path}: not a run directory (no run.json)")
    meta = json.loads(p.read_text())
    if meta.get("schema_version", 0) > SCHEMA_VERSION:
        raise TunesmithError(f"{path}: written by a newer tunesmith (schema {meta['schema_version']}); upgrade tunesmith")
    return meta


def run_system_prompt(spec: str) -> str | None:
    """The system prompt a run was trained with, so that generation matches training."""
    p = Path(spec) / "run.json"
    if p.exists():
        return json.loads(p.read_text()).get("system_prompt")
    return None


def update_run(path: Path, **fields) -> dict:
    """Merge fields into run.json (atomic replace)."""
    p = Path(path) / "run.json"
    meta = json.loads(p.read_text()) if p.exists() else {"schema_version": SCHEMA_VERSION}
    meta.update(fields)
    write_json_atomic(p, meta)
    return meta


def git_commit(cwd: Path | None = None) -> dict:
    """The commit of the code that ran: tunesmith's own checkout when installed from one."""
    here = cwd or Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=here, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    if sha.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": sha.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def env_info() -> dict:
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    hw = {"cpu": _cpu_name(), "cpu_count": os.cpu_count(), "machine": platform.machine()}
    try:
        hw["memory_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    try:
        import torch

        hw["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            hw["cuda"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return {"python": sys.version.split()[0], "platform": platform.platform(), "packages": versions, "git": git_commit(), "hardware": hw}


def data_manifest(files: dict[str, str | None], counts: dict[str, int], extra: dict | None = None) -> dict:
    from tunesmith.data.io import file_sha256

    out = {"schema_version": SCHEMA_VERSION, "files": {}, "counts": counts}
    for role, f in files.items():
        if f:
            out["files"][role] = {"path": str(f), "sha256": file_sha256(f)}
    out.update(extra or {})
    return out


def read_metrics(path: Path) -> list[dict]:
    """metrics.jsonl's records. A torn last line (a kill or a full disk mid-append) is dropped
    with a warning; a damaged line elsewhere is a one-line error naming it."""
    path = Path(path)
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    out = []
    for n, ln in enumerate(lines, 1):
        if not ln.strip():
            continue
        try:
            rec = json.loads(ln)
        except ValueError:
            rec = None
        if not isinstance(rec, dict):
            if n == len(lines):
                warn(f"{path}:{n}: torn last line dropped (an interrupted write)")
                continue
            raise TunesmithError(f"{path}:{n}: not a JSON object; delete or repair this line")
        out.append(rec)
    return out


class MetricsLog:
    """Append-only metrics.jsonl; on resume, lines past the checkpoint's step are dropped
    (they are about to be recomputed), and so is a torn last line."""

    def __init__(self, path: Path, resume_step: int | None = None):
        self.path = Path(path)
        if resume_step is not None and self.path.exists():
            keep = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
            write_text_atomic(self.path, "".join(json.dumps(k) + "\n" for k in keep))
        elif resume_step is None and self.path.exists():
            self.path.unlink()

    def log(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def read(self) -> list[dict]:
        return read_metrics(self.path)


def chain_of(spec: str) -> list[str]:
    """The runs a model spec builds on, oldest first (empty for a plain model)."""
    p = Path(spec)
    if not (p / "run.json").exists():
        return []
    meta = json.loads((p / "run.json").read_text())
    return list(meta.get("chain", [])) + [str(p)]


def start_run(cfg, *, regimen: str, files: dict, counts: dict, data_info: dict | None = None,
              trains_weights: bool = True, resume: bool = False, overwrite: bool = False) -> Path:
    """Create (or reopen) the run directory and write its contract files: config.yaml,
    env.json, data_manifest.json and run.json with status "running"."""
    from tunesmith import configlib

    run = cfg.run_dir
    prepare_run_dir(run, resume=resume, overwrite=overwrite)
    write_text_atomic(run / "config.yaml", configlib.dump_yaml(cfg))
    write_json_atomic(run / "env.json", env_info())
    write_json_atomic(run / "data_manifest.json", data_manifest(files, counts, data_info))
    from tunesmith.models.loading import base_record

    update_run(run, schema_version=SCHEMA_VERSION, name=cfg.name, regimen=regimen, base_model=cfg.start_model,
               base=base_record(cfg.start_model), init_from=cfg.init_from, chain=chain_of(cfg.start_model), trains_weights=trains_weights,
               status="running", seed=cfg.seed)
    return run
