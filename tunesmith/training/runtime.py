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
    release_free_memory()
    reset_peak_memory(device)
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


def release_free_memory() -> bool:
    """Hand memory that Python and torch have freed back to the operating system (glibc keeps
    freed blocks for reuse: after an SFT run of the default model the process stays at ~10 GiB
    resident with nothing alive). A study that trains and evaluates arms one after another in
    one process would otherwise carry one arm's activations into the next arm's figures and
    into the machine's free memory. Returns False where glibc's malloc_trim is not available."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.malloc_trim(0))
    except (OSError, AttributeError):
        return False


def reset_peak_memory(device: torch.device) -> bool:
    """Start a new peak-memory window, so that a run's figure is its own and not that of an earlier
    run in the same process (a study trains its arms one after another in one process). On CPU,
    writing 5 to /proc/self/clear_refs resets the kernel's resident high-water mark (Linux >= 4.0).
    Returns False where that is not possible: the figure is then the process's peak so far."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        return True
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_memory_mib(device: torch.device) -> float:
    """Peak memory since the last `reset_peak_memory`: GPU allocations on CUDA, the process's
    resident set on CPU (weights, activations, optimizer state and the Python heap together)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):  # "VmHWM:   123456 kB"
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) for k, v in batch.items()} if device.type != "cpu" else batch
