"""Which weights a regimen trains: LoRA adapters (peft), LoRA on a 4-bit base (QLoRA), everything,
or the top blocks only.

Any regimen that trains weights calls `apply_adapter` and, at the end, `save_model`; the saved
`model/` directory loads with transformers (and peft for adapters) alone.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from tunesmith.errors import ConfigError
from tunesmith.rundir import remove_tree


LORA_MODES = ("lora", "qlora")


def is_lora(mode: str) -> bool:
    """True for the adapter modes that train LoRA adapters on a frozen base (disabling the
    adapter gives the starting model back, so no reference copy is needed)."""
    return mode in LORA_MODES


def apply_adapter(model, cfg, *, task_type: str = "CAUSAL_LM"):
    """Mark the trainable parameters per `cfg` (an AdapterConfig); returns the model to train.
    For qlora the base must already be quantized (`quantize_base_4bit`)."""
    if is_lora(cfg.mode):
        from peft import LoraConfig, get_peft_model

        lcfg = LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=cfg.target_modules,
            task_type=task_type,
        )
        try:
            return get_peft_model(model, lcfg)
        except ValueError as e:  # peft names the module it could not find
            raise ConfigError(f"adapter.target_modules: {e}") from e
    if cfg.mode == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    if cfg.mode == "freeze":
        return _freeze_all_but_top(model, cfg.train_top_layers)
    raise ConfigError(f"adapter.mode: unknown mode {cfg.mode!r}")


def load_trainable(cfg, device, *, keep_reference: bool = False, precision: str | None = None):
    """The starting model of `cfg.start_model` (an earlier run's adapter merged in) with
    `cfg.adapter` applied, on `device`, in training mode. Returns (model, tokenizer, reference,
    n_trainable, n_total); `reference` is a frozen copy of the starting weights when
    `keep_reference` is set (a LoRA model needs none: disabling the adapter gives the start).
    With `precision` (the resolved training precision) given, the training options that change
    the model apply too: training.base_dtype, gradient_checkpointing and compile."""
    import copy

    from tunesmith.models.loading import load_model

    # A frozen base that will be held in bf16 loads in bf16: the float32 copy would be the run's
    # memory peak (4 GiB for a 1B model). Only without a reference copy, which must stay float32.
    bf16_base = precision is not None and not keep_reference and \
        resolved_base_dtype(cfg.training.base_dtype, cfg.adapter.mode, precision) == "bf16"
    model, tok, _ = load_model(cfg.start_model, merge_adapter=True, precision="bf16" if bf16_base else "fp32")
    reference = copy.deepcopy(model).requires_grad_(False).eval().to(device) if keep_reference else None
    if cfg.adapter.mode == "qlora":
        model = quantize_base_4bit(model.to(device), cfg.adapter, bf16=precision == "bf16")
    model = apply_adapter(model, cfg.adapter).to(device)
    model.train()
    counts = count_params(model)
    if precision is not None:
        model = apply_training_options(model, cfg.training, cfg.adapter.mode, precision)
    return (model, tok, reference, *counts)


def quantize_base_4bit(model, acfg, *, bf16: bool):
    """QLoRA's base (Dettmers et al. 2023): every linear layer of the decoder becomes a
    bitsandbytes 4-bit layer (acfg.quant_type, NF4 by default; acfg.double_quant also quantizes the
    per-64-weight scales), computing in bf16 or fp32. The output layer stays as it is (it is tied to
    the input embeddings in most small models, and quantizing the vocabulary projection costs the
    most accuracy). Quantizes on the model's device: bitsandbytes runs on CUDA and on CPU."""
    import torch

    try:
        import bitsandbytes as bnb
    except ImportError:
        raise ConfigError("adapter.mode: qlora needs bitsandbytes; install it with pip install 'tunesmith[qlora]' "
                          "(or use adapter.mode: lora)") from None
    device = next(model.parameters()).device
    head = model.get_output_embeddings()
    compute = torch.bfloat16 if bf16 else torch.float32
    for parent in list(model.get_decoder().modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not torch.nn.Linear or child is head:
                continue
            q = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None, compute_dtype=compute,
                                  compress_statistics=acfg.double_quant, quant_type=acfg.quant_type, device="meta")
            # Params4bit quantizes when moved to a device: (out, in) fp32 -> packed uint8 + scales.
            q.weight = bnb.nn.Params4bit(child.weight.data, requires_grad=False, compress_statistics=acfg.double_quant,
                                         quant_type=acfg.quant_type, module=q).to(device)
            if child.bias is not None:
                q.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
            # bitsandbytes 0.50 repacks the weights for its AVX512-BF16 CPU kernel on the first
            # forward in eval mode (validation) and never packs them back: later training steps
            # would then run a kernel with no backward, and gradients would stop at that layer.
            q.support_avx512bf16_for_cpu = False
            setattr(parent, name, q)
    for p in model.parameters():
        p.requires_grad_(False)
        # A model loaded in its file's dtype keeps its tensors as views of the memory-mapped
        # checkpoint; while the embeddings and norms are such views the whole file stays mapped,
        # and the pages quantization read stay resident beside their 4-bit copies. Owning copies
        # of the few float tensors left let the mapping go.
        if p.is_floating_point():
            p.data = p.data.clone()
    return model


def resolved_base_dtype(base_dtype: str, adapter_mode: str, precision: str) -> str:
    """'bf16' or 'fp32' for the frozen base weights: bf16 only under LoRA (nothing else has a
    frozen base whose precision does not matter to the optimizer) and, for auto, only when the
    forward pass runs in bf16 anyway."""
    if not is_lora(adapter_mode) or base_dtype == "fp32":
        return "fp32"
    if base_dtype == "bf16":
        return "bf16"
    return "bf16" if precision == "bf16" else "fp32"


def apply_training_options(model, tc, adapter_mode: str, precision: str):
    """Cast the frozen base to bf16 (training.base_dtype), switch on activation checkpointing
    and torch.compile as the TrainingConfig `tc` asks; trainable weights stay float32."""
    import torch

    if resolved_base_dtype(tc.base_dtype, adapter_mode, precision) == "bf16":
        for p in model.parameters():
            # Not QLoRA's packed 4-bit weights (uint8): only frozen float tensors are cast.
            if not p.requires_grad and p.is_floating_point():
                p.data = p.data.to(torch.bfloat16)
    if is_lora(adapter_mode) and precision == "bf16":
        lora_inputs_in_autocast_dtype(model)
    if tc.gradient_checkpointing:
        # use_reentrant=False: gradients reach LoRA weights even though the block inputs
        # (frozen embeddings) do not require grad, and it works under autocast.
        # transformers 5 renamed it; the old name warns of its removal in v6.
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if tc.compile:
        model.get_decoder().compile()  # in place: state-dict keys and saving stay unchanged
    return model


def lora_inputs_in_autocast_dtype(model) -> int:
    """Under bf16 autocast, let each LoRA layer take its bf16 input as it is. peft casts the input
    of every adapter to the adapters' float32 first, and autograd keeps that copy (and, with LoRA
    dropout, the dropped copy) for the backward pass: for 8 rows of 512 tokens of the default model
    that is ~40% of a step's activation memory (docs/benchmarks.md). Without the cast the adapter
    matmuls run in bf16 like every other matmul under autocast; adapter weights, their gradients
    and the optimizer state stay float32. Outside autocast (generation during training) peft's
    cast stays on, because bf16 inputs cannot meet float32 weights there. Returns how many LoRA
    layers were hooked."""
    import torch
    from peft.tuners.tuners_utils import BaseTunerLayer

    def pre_hook(module, args):
        x = args[0] if args else None
        if isinstance(x, torch.Tensor):
            module.cast_input_dtype_enabled = not torch.is_autocast_enabled(x.device.type)

    n = 0
    for module in model.modules():
        if isinstance(module, BaseTunerLayer) and hasattr(module, "cast_input_dtype_enabled"):
            module.register_forward_pre_hook(pre_hook)
            n += 1
    return n


def _freeze_all_but_top(model, n_top: int):
    decoder = model.get_decoder()
    layers = getattr(decoder, "layers", None)
    if layers is None:
        raise ConfigError("adapter.mode: freeze needs a model whose decoder has .layers; use lora or full")
    if n_top > len(layers):
        raise ConfigError(f"adapter.train_top_layers: {n_top} exceeds the model's {len(layers)} blocks")
    for p in model.parameters():
        p.requires_grad_(False)
    trained = list(layers[len(layers) - n_top :])
    if getattr(decoder, "norm", None) is not None:
        trained.append(decoder.norm)
    # The output layer adapts the vocabulary distribution; with tied embeddings this also
    # trains the input embeddings (they are one tensor).
    trained.append(model.get_output_embeddings())
    for module in trained:
        for p in module.parameters():
            p.requires_grad_(True)
    return model


def count_params(model) -> tuple[int, int]:
    """(trainable, total) parameter counts, each shared tensor counted once."""
    seen, trainable, total = set(), 0, 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        # A 4-bit (QLoRA) weight packs two values a byte: count the weights it stands for.
        qs = getattr(p, "quant_state", None)
        n = int(qs.shape.numel()) if qs is not None else p.numel()
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total


def param_groups(model, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on matrices only (norm scales and biases are not regularised)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def portable_adapter_config(model_dir: Path, run_json: Path) -> None:
    """Name an adapter's base as the run does (a built-in name, a run or the path the user gave),
    not by the absolute cache path peft writes, so that the run directory loads on another machine."""
    cfg_path, run_json = Path(model_dir) / "adapter_config.json", Path(run_json)
    if not (cfg_path.exists() and run_json.exists()):
        return
    base = json.loads(run_json.read_text()).get("base_model")
    if base:
        from tunesmith.atomic import write_json_atomic

        cfg = json.loads(cfg_path.read_text())
        cfg["base_model_name_or_path"] = str(base)
        write_json_atomic(cfg_path, cfg)


def save_model(model, tokenizer, out_dir: Path, state_dict: dict | None = None) -> Path:
    """Write the trained model (adapter only for peft models) and tokenizer, atomically.
    `state_dict`: the weights to write instead of the model's own (FSDP's gathered whole weights)."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".", suffix=".tmp", dir=out_dir.parent))
    try:
        if state_dict is None:
            model.save_pretrained(tmp)
        else:
            model.save_pretrained(tmp, state_dict=state_dict)
        tokenizer.save_pretrained(tmp)
        portable_adapter_config(tmp, out_dir.parent / "run.json")
        if out_dir.exists():
            old = out_dir.with_name(out_dir.name + ".old")
            remove_tree(old, out_dir.parent)
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            remove_tree(old, out_dir.parent)
        else:
            os.replace(tmp, out_dir)
    finally:
        remove_tree(tmp, out_dir.parent)
    return out_dir
