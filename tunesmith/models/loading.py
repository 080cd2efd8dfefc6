"""Load a causal LM and its tokenizer from a built-in name, a GGUF file, a local Hugging Face
directory, a PEFT adapter directory or a tunesmith run directory. Nothing touches the network.

A GGUF file is dequantized by transformers once and cached as safetensors under the user cache
directory, so later loads take a fraction of a second instead of ~20 s.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tunesmith.errors import ModelNotFoundError, TunesmithError
from tunesmith.models.builtins import BUILTINS

# tunesmith never downloads: make transformers and huggingface_hub fail fast instead of
# waiting on a network that air-gapped machines do not have.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

# Used when a (base) model ships no chat template: a plain, prefix-consistent format, so that
# the same rendering serves training, evaluation and serving. Turns end in newlines, never in a
# space: SentencePiece tokenizers fold a space into the next word's token, which would make the
# generation prompt tokenize differently from training text.
FALLBACK_CHAT_TEMPLATE = (
    "{% if add_bos %}{{ bos_token }}{% endif %}"
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] + '\n\n' }}"
    "{% elif m['role'] == 'user' %}{{ '### User:\n' + m['content'] + '\n' }}"
    "{% else %}{{ '### Assistant:\n' + m['content'] + eos_token + '\n' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '### Assistant:\n' }}{% endif %}"
)


def cache_root() -> Path:
    """Where converted models live: $TUNESMITH_CACHE, else $XDG_CACHE_HOME/tunesmith."""
    if os.environ.get("TUNESMITH_CACHE"):
        return Path(os.environ["TUNESMITH_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tunesmith"


def converted_dir(gguf: Path) -> Path:
    # Keyed by path, size and mtime: a changed or replaced file gets a fresh conversion,
    # without hashing hundreds of MB on every load.
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_root() / "models" / f"{gguf.stem}-{key}"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def convert_gguf(gguf: Path) -> Path:
    """Dequantize a GGUF file into a Hugging Face directory (once) and return that directory."""
    target = converted_dir(gguf)
    if (target / "config.json").exists():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent))
    try:
        try:
            tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        except Exception as e:  # gguf raises many types; the user needs one line
            raise TunesmithError(f"{gguf}: cannot read this GGUF file ({type(e).__name__}: {e})") from e
        # The weights are dequantized already; drop the gguf marker so that save_pretrained
        # accepts the model and later loads see a plain float checkpoint.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "tunesmith_source.json").write_text(json.dumps(
            {"gguf": str(gguf.resolve()), "sha256": sha256_file(gguf), "file_type": gguf_file_type(gguf)}, indent=2))
        try:
            os.replace(tmp, target)  # atomic: a concurrent converter may have won; keep theirs
        except OSError:
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def gguf_file_type(gguf: Path) -> str:
    """The quantization a GGUF file was written with, e.g. "Q4_1" (from general.file_type)."""
    import gguf as gguf_pkg

    try:
        field = gguf_pkg.GGUFReader(gguf).fields["general.file_type"]
        name = gguf_pkg.LlamaFileType(int(field.parts[field.data[0]][0])).name
    except Exception:  # an unknown or missing file type must not stop a conversion
        return "unknown"
    return name.removeprefix("MOSTLY_")


def gguf_source(converted: Path) -> dict:
    """tunesmith_source.json of a converted GGUF: the GGUF's path, sha256 and file type (the
    file type is added here, once, for conversions made before it was recorded)."""
    src = Path(converted) / "tunesmith_source.json"
    if not src.exists():
        return {}
    info = json.loads(src.read_text())
    if "file_type" not in info and Path(info.get("gguf", "")).is_file():
        from tunesmith.atomic import write_json_atomic

        info["file_type"] = gguf_file_type(Path(info["gguf"]))
        try:
            write_json_atomic(src, info)
        except OSError:
            pass  # a read-only cache: recomputed next time
    return info


@dataclass
class ModelRef:
    """What a model spec resolved to on disk."""

    spec: str
    kind: str  # builtin | gguf | hf | adapter | run
    path: Path  # a Hugging Face directory holding the (base) weights
    adapter: Path | None = None  # a PEFT adapter on top of `path`
    full_weights: Path | None = None  # fine-tuned full weights replacing `path`'s
    base_spec: str | None = None  # for runs and adapters: the base model's spec
    run_dir: Path | None = None
    info: dict = field(default_factory=dict)
    # A run trained on top of another run (init_from, or a run as model.name): `base` is that
    # run's ref; its adapter is merged before this one's is applied.
    base: "ModelRef | None" = None

    @property
    def weights_dir(self) -> Path:
        return self.full_weights or self.path


def _not_found(spec: str) -> ModelNotFoundError:
    names = ", ".join(BUILTINS)
    if "/" in spec and not spec.startswith((".", "/", "~")):
        return ModelNotFoundError(
            f"model '{spec}': not on disk, and tunesmith never downloads; fetch it on a connected "
            f"machine (e.g. `huggingface-cli download {spec} --local-dir DIR`), copy DIR here and "
            f"pass its path, or use a built-in ({names})"
        )
    return ModelNotFoundError(f"model '{spec}': no such built-in model, directory or .gguf file (built-ins: {names})")


def resolve_model(spec: str | os.PathLike) -> ModelRef:
    """Turn a user's model spec into paths, converting a GGUF file on first use."""
    spec = str(spec)
    if spec in BUILTINS:
        b = BUILTINS[spec]
        gguf = b.gguf(prepare=True)
        if gguf is None:
            raise ModelNotFoundError(f"model '{spec}' is not installed; install it with: {b.install}")
        return ModelRef(spec, "builtin", convert_gguf(gguf), info={"gguf": str(gguf)})
    p = Path(spec).expanduser()
    if p.is_file() and p.suffix == ".gguf":
        return ModelRef(spec, "gguf", convert_gguf(p), info={"gguf": str(p)})
    if p.is_dir() and (p / "run.json").exists():
        return _resolve_run(p)
    if p.is_dir() and (p / "adapter_config.json").exists():
        base = json.loads((p / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if not base:
            raise TunesmithError(f"{p}/adapter_config.json: base_model_name_or_path is empty (set it to the base model's directory)")
        ref = resolve_model(base)
        return ModelRef(spec, "adapter", ref.path, adapter=p, base_spec=base)
    if p.is_dir() and (p / "config.json").exists():
        return ModelRef(spec, "hf", p)
    if p.is_dir():
        raise ModelNotFoundError(f"{p}: not a model directory (no config.json, adapter_config.json or run.json in it)")
    raise _not_found(spec)


def _locate_base(spec: str, run_dir: Path) -> str:
    """A run's base model as recorded (a built-in name or a path relative to where it was trained).
    A relative path that does not exist from here is looked up from the run directory's
    ancestors, so that a chain (runs/sft started from runs/cpt) still loads from another folder."""
    p = Path(spec).expanduser()
    if p.is_absolute() or p.exists() or len(p.parts) < 2:
        return spec
    for anc in run_dir.resolve().parents:
        if (anc / p).exists():
            return str(anc / p)
    return spec


def base_record(spec: str) -> dict:
    """What run.json records of a run's base model, so that the run directory can be checked
    (and resolved) on another machine: a built-in by name plus the sha256 of its GGUF and the
    quantization its float weights were dequantized from; a GGUF file or Hugging Face directory
    by path and content hash; a run by its spec and that run's own record."""
    spec = str(spec)
    p = Path(spec).expanduser()
    if p.is_dir() and (p / "run.json").exists():
        return {"run": spec, "base": json.loads((p / "run.json").read_text()).get("base")}
    ref = resolve_model(spec)
    if ref.kind in ("builtin", "gguf"):
        src = gguf_source(ref.path)
        key = {"builtin": spec} if ref.kind == "builtin" else {"gguf": str(p.resolve())}
        return {**key, "gguf_sha256": src.get("sha256"), "dequantized_from": f"{src.get('file_type', 'unknown')} GGUF"}
    return {"path": str(p.resolve()), "sha256": _dir_sha256(p)}


_HASHES: dict[tuple, str] = {}
_WARNED: set[tuple] = set()  # one warning per run and problem


def _dir_sha256(p: Path) -> str:
    """Content hash of a model file or directory, memoised per process by path, size and mtime."""
    from tunesmith.data.io import file_sha256

    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    key = (str(p.resolve()), tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files))
    if key not in _HASHES:
        _HASHES[key] = file_sha256(p)
    return _HASHES[key]


def base_mismatch(meta: dict, ref: "ModelRef") -> str | None:
    """Why the base model found here is not the one the run was trained on (None when it is,
    or when the run predates base records)."""
    rec = meta.get("base") or {}
    if rec.get("gguf_sha256"):
        have = gguf_source(ref.path).get("sha256")
        if have and have != rec["gguf_sha256"]:
            name = rec.get("builtin") or rec.get("gguf")
            return (f"base model {name}: this machine's GGUF has sha256 {have[:12]}..., the run was trained on "
                    f"{rec['gguf_sha256'][:12]}... (another version of the model); answers may differ from what was measured")
    elif rec.get("sha256") and ref.kind == "hf":
        have = _dir_sha256(ref.path)
        if have != rec["sha256"]:
            return (f"base model {rec.get('path')}: its files have sha256 {have[:12]}..., the run was trained on "
                    f"{rec['sha256'][:12]}...; answers may differ from what was measured")
    return None


def _resolve_run(run_dir: Path) -> ModelRef:
    meta = json.loads((run_dir / "run.json").read_text())
    if meta.get("regimen") == "head":
        raise TunesmithError(f"{run_dir} is a classification-head run: it predicts labels, not text; use `tunesmith eval {run_dir} --task classification`")
    base_spec = _locate_base(meta["base_model"], run_dir)
    ref = resolve_model(base_spec)
    problem = base_mismatch(meta, ref)
    if problem and (str(run_dir), problem) not in _WARNED:
        from tunesmith.rundir import warn

        _WARNED.add((str(run_dir), problem))
        warn(f"{run_dir}: {problem}")
    model_dir = run_dir / "model"
    if not meta.get("trains_weights", True):
        # A prompting or retrieval "run" adds no weights: it is its base model (itself possibly a run).
        return ModelRef(str(run_dir), "run", ref.path, adapter=ref.adapter, full_weights=ref.full_weights,
                        base_spec=base_spec, run_dir=run_dir, base=ref.base)
    if meta.get("status") != "completed" or not model_dir.exists():
        raise TunesmithError(f"{run_dir}: run did not complete (status {meta.get('status')!r}); finish it with `tunesmith train ... --resume`")
    if (model_dir / "adapter_config.json").exists():
        stacked = ref if (ref.adapter is not None or ref.base is not None) else None
        return ModelRef(str(run_dir), "run", ref.weights_dir, adapter=model_dir, base_spec=base_spec, run_dir=run_dir, base=stacked)
    return ModelRef(str(run_dir), "run", ref.path, full_weights=model_dir, base_spec=base_spec, run_dir=run_dir)


def prepare_tokenizer(tok):
    """Give every tokenizer a chat template and a pad token, the same way everywhere."""
    if not getattr(tok, "chat_template", None):
        # Templated text is tokenized without special tokens, so the template itself must
        # write BOS for models trained with one (Gemma degrades badly without it).
        ids = tok("a")["input_ids"]
        adds_bos = tok.bos_token_id is not None and ids[:1] == [tok.bos_token_id]
        tok.chat_template = FALLBACK_CHAT_TEMPLATE.replace("add_bos", "true" if adds_bos else "false")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_tokenizer(spec: str | ModelRef):
    from transformers import AutoTokenizer

    ref = spec if isinstance(spec, ModelRef) else resolve_model(spec)
    src = ref.adapter if ref.adapter and (ref.adapter / "tokenizer_config.json").exists() else ref.weights_dir
    return prepare_tokenizer(AutoTokenizer.from_pretrained(src))


def _load_weights(ref: ModelRef, dtype=None):
    """The model a ref describes, with every adapter below the top one merged in (float32, or
    `dtype` for a plain model that has no adapter to merge)."""
    import torch
    from transformers import AutoModelForCausalLM

    if ref.base is not None:
        model = _load_weights(ref.base)
        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(ref.weights_dir, dtype=dtype or torch.float32, attn_implementation="sdpa")
    if ref.adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, ref.adapter)
    return model


def load_model(spec: str | ModelRef, *, merge_adapter: bool = False, precision: str = "fp32", device: str | None = None):
    """Return (model, tokenizer, ref) on CPU (or on `device`), adapter attached when there is one.

    Adapters merge in float32; `precision` "bf16" then casts the weights for inference (half the
    memory, and matrix multiplies on the CPU's bf16 units). A plain model (no adapter) loads in
    bf16 directly: the same values as casting after a float32 load, without ever holding the
    float32 copy (for a 1B model, 4 GiB that would otherwise be the run's peak). A LoRA adapter
    that stays attached keeps float32 weights: peft computes it in float32 on bf16 inputs."""
    import torch

    ref = spec if isinstance(spec, ModelRef) else resolve_model(spec)
    direct = precision == "bf16" and ref.base is None and ref.adapter is None
    model = _load_weights(ref, torch.bfloat16 if direct else None)
    if merge_adapter and hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    if precision == "bf16":
        if hasattr(model, "merge_and_unload"):
            model.base_model.model.to(torch.bfloat16)
            for name, param in model.named_parameters():
                if "lora_" in name:
                    param.data = param.data.float()
        else:
            model.to(torch.bfloat16)
    elif precision != "fp32":
        raise ValueError(f"precision must be fp32 or bf16, not {precision!r}")
    if device is not None and device != "cpu":
        model.to(device)
    model.eval()
    return model, load_tokenizer(ref), ref


def inference_device(pref: str = "auto") -> str:
    """cpu or cuda for inference: auto is the GPU when torch sees one (evaluation is most of a
    study's time, and every evaluation path takes its device from the model's weights)."""
    import torch

    if pref == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if pref == "cuda" and not torch.cuda.is_available():
        from tunesmith.errors import ConfigError

        raise ConfigError("eval.device: cuda, but torch sees no CUDA device (torch.cuda.is_available() is False); use auto or cpu")
    if pref not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, not {pref!r}")
    return pref


def inference_precision(precision: str = "auto", device: str | None = None) -> str:
    """fp32 or bf16 for inference: "auto" is bf16 where the hardware multiplies bf16 natively
    (a CUDA GPU with bf16 support, a CPU with AVX512-BF16 or AMX) and fp32 elsewhere, where bf16
    would be emulated and slower than fp32."""
    if precision in ("fp32", "bf16"):
        return precision
    if precision != "auto":
        raise ValueError(f"precision must be auto, fp32 or bf16, not {precision!r}")
    import torch

    from tunesmith.training.runtime import cpu_has_bf16

    if (device or "").startswith("cuda") or (device is None and torch.cuda.is_available()):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_bf16() else "fp32"
