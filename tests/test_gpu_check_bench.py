"""benchmarks/gpu_check.py: without a GPU it refuses in one line (exit 2); with --device cpu --quick
every step runs on a tiny model and lands in its table, so the script a GPU machine runs is known
to work before one is lent. The memory-by-model-size benchmark runs its steps the same way."""

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_without_a_gpu_it_refuses_in_one_line():
    p = subprocess.run([sys.executable, "benchmarks/gpu_check.py"], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "torch sees no CUDA device" in p.stderr and "--device cpu --quick" in p.stderr


def test_quick_cpu_run_fills_every_step(tmp_path, default_tokenizer):
    bench = _load("gpu_check")
    out = tmp_path / "bench.md"
    rc = bench.main(["--device", "cpu", "--quick", "--only", "env,peak,lora-sft,throughput,study", "--work", str(tmp_path / "w"),
                     "--out", str(out), "--json", str(tmp_path / "r.json")])
    r = json.loads((tmp_path / "r.json").read_text())
    assert rc == 0, {k: v.get("error") for k, v in r["steps"].items()}
    st = r["steps"]
    assert st["peak"]["bf16_matmul_tflops"] > 0
    assert st["lora-sft"]["device"] == "cpu" and st["lora-sft"]["eval_device"] == "cpu" and st["lora-sft"]["steps"] == 4
    assert st["throughput"]["lora"]["tokens_per_s"] > 0 and 0 < st["throughput"]["full"]["mfu"] < 1
    assert st["study"]["arms"] == 2 and st["study"]["training_devices"] == ["cpu"] and st["study"]["winner"]
    text = out.read_text()
    assert text.count(bench.START) == 1 and re.search(r"\| lora-sft \| 4 steps at [\d.]+ tok/s \(\w+, cpu\)", text)


def test_memory_sizes_quick_records_every_configuration(tmp_path, default_tokenizer):
    bench = _load("memory_sizes")
    out = tmp_path / "bench.md"
    assert bench.main(["--quick", "--only", "llama-1b-random", "--configs", "lora-fp32-base,lora,qlora+gc,full",
                       "--steps", "3", "--work", str(tmp_path / "w"), "--out", str(out)]) == 0
    rows = json.loads(re.search(r"<!-- memory-sizes:data (.*?) -->", out.read_text(), re.S).group(1))
    assert [r["config"] for r in rows] == ["lora-fp32-base", "lora", "qlora+gc", "full"]
    assert all("error" not in r and r["training_mib"] > 0 and r["tokens_per_s"] > 0 for r in rows), rows
    full = rows[-1]
    assert full["trainable"] == full["params"] and rows[0]["trainable"] < rows[0]["params"] / 10
