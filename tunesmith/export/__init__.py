"""`tunesmith export RUN --format hf|gguf|ollama`: hand a run over as files other tools load,
answering exactly as the run was measured.

- `hf`: a plain Hugging Face directory (`export.hf`): adapters merged into the float weights,
  tokenizer and chat template (with the run's system prompt as default), generation config.
- `gguf`: that directory converted by llama.cpp's converter into one GGUF file (`export.gguf`).
- `ollama`: the GGUF plus a Modelfile (`export.ollama`).

Every export also gets a model card (README.md, `export.card`); a prompting or retrieval run
also gets `tunesmith_recipe/`. The export is built in a temporary folder beside the target and
renamed into place, so a target is either complete or absent; an existing target is only
replaced with `overwrite`. Layout and figures: docs/export.md.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from tunesmith.errors import TunesmithError

FORMATS = ("hf", "gguf", "ollama")


def _quant(fmt: str, quant: str | None, is_head: bool) -> str:
    from tunesmith.export import gguf
    from tunesmith.export.hf import DTYPES

    if fmt not in FORMATS:
        raise TunesmithError(f"--format {fmt}: unknown export format (choose from {', '.join(FORMATS)})")
    if is_head and fmt != "hf":
        raise TunesmithError(f"--format {fmt}: a classification-head run exports only as hf (a sequence-classification "
                             "model); llama.cpp and Ollama run causal language models")
    if fmt == "hf":
        quant = quant or "f32"
        if quant not in DTYPES:
            raise TunesmithError(f"--quant {quant}: an hf export holds 16/32-bit weights ({', '.join(DTYPES)}); "
                                 "quantized types are for --format gguf")
        return quant
    return gguf.check_quant(quant or gguf.DEFAULT_QUANT)


def check_run(run: Path) -> dict:
    """run.json of a finished run whose base model on this machine is the one it was trained on."""
    from tunesmith.models.loading import base_mismatch, resolve_model
    from tunesmith.runs import read_run

    if not (run / "run.json").is_file():
        raise TunesmithError(f"{run}: not a run directory (no run.json); export takes a run (runs/<name>)")
    meta = read_run(run)
    if meta.get("status") != "completed":
        raise TunesmithError(f"{run}: run did not complete (status {meta.get('status')!r}); finish it with `tunesmith train ... --resume`")
    if meta.get("base") and "run" not in meta["base"]:
        problem = base_mismatch(meta, resolve_model(meta["base_model"]))
        if problem:
            raise TunesmithError(f"{run}: {problem}; refusing to export a model that differs from the measured one")
    return meta


def _target(run: Path, fmt: str, quant: str | None, out, overwrite: bool) -> Path:
    target = Path(out) if out else run / "export" / (f"{fmt}-{quant}" if quant else fmt)
    t, r = target.resolve(), run.resolve()
    if t == r or t in r.parents:
        raise TunesmithError(f"--out {target}: would replace the run itself; choose another folder")
    if target.exists() and not overwrite:
        raise TunesmithError(f"{target} already exists; pass --overwrite to replace it")
    return target


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "model"


def _write(run: Path, meta: dict, how, fmt: str, quant: str, dst: Path) -> dict:
    from tunesmith.export import hf

    system = how.recipe.system if how.recipe is not None else how.system
    info: dict = {"format": fmt, "quant": quant, "run": str(run.resolve()), "regimen": meta.get("regimen")}
    if how.is_head:
        info.update(hf.write_head(run, dst, quant))
    elif fmt == "hf":
        info.update(hf.write_causal(run, dst, quant, system))
    else:
        info.update(_write_gguf(run, meta, fmt, quant, dst, system))
    if how.recipe is not None:
        info.update(hf.write_recipe(run, dst, how.recipe))
    return info


def _write_gguf(run: Path, meta: dict, fmt: str, quant: str, dst: Path, system: str | None) -> dict:
    """Stage a float32 hf export, convert it, and for ollama add the Modelfile."""
    from tunesmith.export import gguf, hf

    with tempfile.TemporaryDirectory(prefix=".hf-stage.", dir=dst.parent) as stage:
        stage = Path(stage)
        info = hf.write_causal(run, stage, "f32", system)
        info.update(gguf.write_gguf(stage, dst, quant, _safe_name(meta.get("name") or run.name)))
        info["dtype"] = quant
        if fmt == "ollama":
            info["modelfile"] = _write_modelfile(stage, dst, info, system)
    return info


def _write_modelfile(stage: Path, dst: Path, info: dict, system: str | None) -> str:
    from transformers import AutoTokenizer

    from tunesmith.atomic import write_text_atomic
    from tunesmith.export.ollama import modelfile

    tok = AutoTokenizer.from_pretrained(stage)
    if not system:  # a template's own default system message (SmolLM2 has one) must not get lost
        probe = tok.apply_chat_template([{"role": "user", "content": "?"}], tokenize=False)
        if probe.startswith("<|im_start|>system\n"):
            system = probe[len("<|im_start|>system\n"):].split("<|im_end|>", 1)[0]
    stops = [tok.convert_ids_to_tokens(i) for i in info["eos_token_ids"]]
    text = modelfile(info["gguf"], tok.chat_template, system, stops, tok.bos_token, tok.eos_token)
    write_text_atomic(dst / "Modelfile", text)
    return "Modelfile"


def _place(tmp: Path, target: Path) -> None:
    """Rename the finished export into place; an old one is moved aside first, removed after."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
        os.replace(target, old / target.name)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export(run: str | Path, *, format: str, quant: str | None = None, out: str | Path | None = None,
           overwrite: bool = False) -> dict:
    """Export a finished run; returns {"out", "format", "quant", "files": [{"path", "bytes"}], ...}."""
    from tunesmith.answering import Answering
    from tunesmith.atomic import write_text_atomic
    from tunesmith.export.card import model_card

    run = Path(run)
    meta = check_run(run)
    how = Answering.of(run)
    quant_given = quant
    quant = _quant(format, quant, how.is_head)
    target = _target(run, format, quant_given, out, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        info = _write(run, meta, how, format, quant, tmp)
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        info["files"] = [f"{p.relative_to(tmp).as_posix()} ({p.stat().st_size:,} bytes)" for p in files] + ["README.md (this card)"]
        write_text_atomic(tmp / "README.md", model_card(run, meta, info))
        _place(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    listing = [{"path": p.relative_to(target).as_posix(), "bytes": p.stat().st_size} for p in sorted(target.rglob("*")) if p.is_file()]
    return {**{k: v for k, v in info.items() if k != "files"}, "out": str(target), "files": listing}
