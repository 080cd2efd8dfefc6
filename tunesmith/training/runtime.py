"""Device, precision, seeding and memory figures shared by every training loop."""

from __future__ import annotations

import contextlib
import random
import resource

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def prepare_runtime(seed: int, tc) -> tuple[torch.device, str]:
    """A training run's first step: seed every RNG, cap CPU threads when asked, and pick the
    device and the precision (`tc` is the TrainingConfig). Returns (device, precision)."""
    seed_everything(seed)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    device = pick_device(tc.device)
    return device, resolve_precision(tc.precision, device)


def pick_device(pref: str = "auto") -> torch.device:
    if pref == "cuda" or (pref == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AVX512-BF16 or AMX)."""
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        fn = getattr(torch.cpu, probe, None)
        try:
            if fn is not None and fn():
                return True
        except Exception:
            continue
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    # Without bf16 units, bf16 autocast on CPU is slower than fp32: only use it where it pays.
    return "bf16" if cpu_has_bf16() else "fp32"


def autocast(device: torch.device, precision: str):
    """Mixed precision for the forward pass; master weights and optimizer state stay float32."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    # ru_maxrss is in KiB on Linux: the process's resident peak, weights and activations included.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) for k, v in batch.items()} if device.type != "cpu" else batch
