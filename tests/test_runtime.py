"""Peak-memory figures are per run: a run started after a larger one in the same process (as a
study's arms are) reports its own peak, not the process's."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tunesmith.training.runtime import peak_memory_mib, prepare_runtime, reset_peak_memory

CPU = torch.device("cpu")


def test_reset_starts_a_new_peak_window():
    if not reset_peak_memory(CPU):
        pytest.skip("this kernel does not allow resetting the resident high-water mark")
    base = peak_memory_mib(CPU)
    big = np.ones(2**26)  # 512 MiB, touched
    del big
    after_big = peak_memory_mib(CPU)
    assert after_big > base + 400
    assert reset_peak_memory(CPU)
    assert peak_memory_mib(CPU) < after_big - 400


def test_prepare_runtime_resets_the_window():
    if not reset_peak_memory(CPU):
        pytest.skip("this kernel does not allow resetting the resident high-water mark")
    big = np.ones(2**26)
    del big
    inherited = peak_memory_mib(CPU)
    tc = SimpleNamespace(threads=None, device="cpu", precision="fp32")
    device, precision = prepare_runtime(0, tc)
    assert (device.type, precision) == ("cpu", "fp32")
    assert peak_memory_mib(device) < inherited - 400
