"""Every CUDA path of tunesmith in a few minutes on a machine with a GPU: the smoke tests on cuda,
one LoRA SFT of the default model with its evaluation before and after, a small study, and the
training throughput with MFU against the GPU's bf16 matmul peak measured in the same run. Written
into docs/benchmarks.md between `<!-- gpu-check:start -->` and `<!-- gpu-check:end -->`.

    python benchmarks/gpu_check.py                     # on a CUDA machine, ~5-10 min
    python benchmarks/gpu_check.py --device cpu --quick  # the same steps on CPU with a tiny model:
                                                        # checks the script (figures meaningless)

Steps (each timed; a failing step is recorded and the others still run, exit status 1):
  env        GPU name, memory, capability, torch and CUDA versions, bf16 support.
  peak       bf16 matmul peak: 8192 x 8192 products, best of 3 timed bursts (TFLOP/s).
  smoke      pytest on the CPU smoke tiers (tiny random model: every regimen trains, QLoRA, levers,
             evaluation, serving): with a GPU present, training.device and eval.device `auto`
             put them on cuda.
  lora-sft   `tunesmith train` on the demo domain with the quickstart's LoRA settings (bf16), then
             `tunesmith eval` of the base model and of the run on the held-out questions (exact
             match, generation tokens/s), all on cuda.
  throughput 20 steps of LoRA and of full SFT, 8 packed rows of 512 tokens: tokens/s, peak GPU
             memory, MFU = 6 x parameters x tokens/s / measured peak (full-model-equivalent FLOPs,
             the convention of docs/benchmarks.md's CPU figures, for LoRA too).
  study      a two-arm study (zero-shot against LoRA SFT) on the demo domain: wall time, winner.

Nothing here is needed by CI (which has no GPU); the CPU tiers run in `make test`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

START, END, TAG = "<!-- gpu-check:start -->", "<!-- gpu-check:end -->", "gpu-check:data"
TITLE = "## GPU check: every CUDA path (benchmarks/gpu_check.py)"
SMOKE = ["tests/test_train_smoke.py", "tests/test_qlora.py", "tests/test_train_levers.py", "tests/test_regimen_head.py",
         "tests/test_regimen_dpo.py", "tests/test_regimen_grpo.py", "tests/test_eval.py", "tests/test_serve.py"]


def step_env(a) -> dict:
    import torch

    out = {"torch": torch.__version__, "python": platform.python_version(), "device": a.device}
    if a.device == "cuda":
        p = torch.cuda.get_device_properties(0)
        out.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), capability=f"{p.major}.{p.minor}",
                   cuda=torch.version.cuda, bf16=torch.cuda.is_bf16_supported(), gpus=torch.cuda.device_count())
    else:
        out.update(cpu=platform.processor() or platform.machine(), cores=os.cpu_count())
    return out


def step_peak(a) -> dict:
    """Dense bf16 matmul throughput: the denominator of MFU, measured rather than looked up."""
    import torch

    n = 1024 if a.quick else 8192
    x = torch.randn(n, n, device=a.device, dtype=torch.bfloat16)
    y = torch.randn(n, n, device=a.device, dtype=torch.bfloat16)
    best = 0.0
    for _ in range(3):
        reps = 3 if a.quick else 50
        _sync(a.device)
        t = time.perf_counter()
        for _ in range(reps):
            x @ y
        _sync(a.device)
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t))
    return {"bf16_matmul_tflops": round(best / 1e12, 2), "n": n}


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def step_smoke(a) -> dict:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not integration", *SMOKE]
    if a.quick:
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_qlora.py", "-k", "without_bitsandbytes"]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    summary = (p.stdout.strip().splitlines() or ["?"])[-1]
    if p.returncode != 0:
        raise RuntimeError(f"pytest: {summary}\n" + p.stdout[-4000:])
    return {"pytest": summary, "files": len(SMOKE) if not a.quick else 1}


def _model(a, work: Path) -> str:
    from tunesmith.models.builtins import DEFAULT_MODEL

    if not a.quick:
        return DEFAULT_MODEL
    from vs_trl import quick_model

    from tunesmith.models.loading import load_tokenizer

    return str(quick_model(work, load_tokenizer(DEFAULT_MODEL)))


def step_lora_sft(a, work: Path) -> dict:
    from tunesmith import api
    from tunesmith.demo.domain import write_domain
    from tunesmith.demo.quickstart import N_FACTS, QUICKSTART_SYSTEM, TRAIN_SETTINGS

    files = write_domain(work / "data", n_facts=N_FACTS)
    model = _model(a, work)
    settings = [*TRAIN_SETTINGS, f"training.device={a.device}", "training.precision=auto"] + (["training.max_steps=4"] if a.quick else [])
    run = api.train(None, [f"data.train={files['qa_train']}", f"model.name={model}", f"data.system_prompt={QUICKSTART_SYSTEM}",
                           "name=gpu-lora-sft", f"output_dir={work / 'runs'}", *settings], overwrite=True, progress=False)
    ev = dict(data=str(files["qa_test"]), task="qa", system=QUICKSTART_SYSTEM, max_new_tokens=16, batch_size=64, device=a.device,
              precision="auto", output_dir=str(work / "runs"))
    t = time.perf_counter()
    before = api.evaluate(model, progress=False, force=True, **ev)
    t_before = time.perf_counter() - t
    after = api.evaluate(run["run_dir"], progress=False, force=True, **ev)
    return {"train_tokens_per_s": run["tokens_per_s"], "train_seconds": run["train_seconds"], "steps": run["steps"],
            "peak_memory_mib": run["peak_memory_mib"], "precision": run["precision"], "device": run["device"],
            "exact_match_before": _metric(before), "exact_match_after": _metric(after), "n": after.get("n"),
            "eval_seconds_base": round(t_before, 1), "eval_seconds": after.get("seconds"),
            "eval_precision": after["generation"].get("precision"), "eval_device": after["generation"].get("device")}


def _metric(res: dict) -> float | None:
    v = res.get("metrics", {}).get("exact_match")
    return round(v["value"], 3) if v else None


def step_throughput(a, work: Path, peak_tflops: float | None) -> dict:
    from eval_shared import steady_tokens_per_s

    from tunesmith import api
    from tunesmith.demo.domain import write_domain

    files = write_domain(work / "data-big", n_facts=80)
    model = _model(a, work)
    out = {}
    for mode in ("lora", "full"):
        steps = 3 if a.quick else 20
        run = api.train(None, [f"data.train={files['qa_train']}", f"model.name={model}", f"adapter.mode={mode}", "data.val_fraction=0.0",
                               "data.max_length=512", "training.batch_size=8", f"training.max_steps={steps}", "training.learning_rate=1e-4",
                               f"training.device={a.device}", "training.precision=auto", f"training.eval_every={steps}", f"training.save_every={steps}",
                               f"name=gpu-throughput-{mode}", f"output_dir={work / 'runs'}"], overwrite=True, progress=False)
        steady = steady_tokens_per_s(run["run_dir"])  # the first step warms up (kernels, allocator)
        flops = 6 * run["total_params"] * steady
        out[mode] = {"tokens_per_s": round(steady, 1), "peak_memory_mib": run["peak_memory_mib"], "params": run["total_params"],
                     "mfu": round(flops / (peak_tflops * 1e12), 4) if peak_tflops else None, "steps": run["steps"]}
    return out


def step_study(a, work: Path) -> dict:
    from tunesmith.demo.study import SFT, demo_study
    from tunesmith.study.config import load_study_config
    from tunesmith.study.runner import run_study

    import shutil

    shutil.rmtree(work / "studies" / "gpu-study", ignore_errors=True)  # a cached study would measure nothing
    base = demo_study(work / "studies", model=_model(a, work))
    sft = {**SFT, "training.device": a.device, **({"training.max_steps": 4} if a.quick else {})}
    base.update(name="gpu-study", arms=[{"name": "zero-shot", "regimen": "prompt"}, {"name": "lora-sft", "regimen": "sft", "set": sft}],
                notes=[], eval={**base["eval"], "device": a.device, "precision": "auto", **({"limit": 8} if a.quick else {})})
    t = time.perf_counter()
    run_study(load_study_config(None, base=base), progress=False)
    res = json.loads((work / "studies" / "gpu-study" / "results.json").read_text())
    devices = sorted({a["config"].get("training", {}).get("device", "-") for a in res["arms"] if a["regimen"] == "sft"})
    return {"wall_seconds": round(time.perf_counter() - t, 1), "winner": (res.get("winner") or {}).get("text"), "arms": len(res["arms"]),
            "training_devices": devices}


def render(r: dict) -> str:
    env, st = r["steps"].get("env", {}), r["steps"]
    head = env.get("gpu") or env.get("cpu", "?")
    lines = [f"- Measured: {r['when']} on {head} ({env.get('gpu_memory_gib', '?')} GiB, CUDA {env.get('cuda', '-')}, "
             f"torch {env.get('torch')}); `python benchmarks/gpu_check.py{' ' + ' '.join(r['argv']) if r['argv'] else ''}`; "
             f"{r['seconds'] / 60:.1f} min in all", "", "| step | result | seconds |", "|---|---|---:|"]
    for name, s in st.items():
        if "error" in s:
            text = f"**failed**: {s['error'].splitlines()[0][:200]}"
        elif name == "peak":
            text = f"bf16 matmul peak {s['bf16_matmul_tflops']} TFLOP/s ({s['n']}x{s['n']})"
        elif name == "smoke":
            text = f"pytest: {s['pytest']}"
        elif name == "lora-sft":
            text = (f"{s['steps']} steps at {s['train_tokens_per_s']} tok/s ({s['precision']}, {s['device']}), peak {s['peak_memory_mib'] / 1024:.2f} GiB; "
                    f"held-out exact match {s['exact_match_before']} -> {s['exact_match_after']} (n={s['n']}, eval {s['eval_precision']} on "
                    f"{s['eval_device']}, {s['eval_seconds']} s)")
        elif name == "throughput":
            text = "; ".join(f"{m}: {v['tokens_per_s']} tok/s, MFU {v['mfu'] * 100:.1f}%, peak {v['peak_memory_mib'] / 1024:.2f} GiB"
                             if v.get("mfu") is not None else f"{m}: {v['tokens_per_s']} tok/s" for m, v in s.items() if isinstance(v, dict))
        elif name == "study":
            text = f"{s['arms']} arms in {s['wall_seconds']:.0f} s (trained on {', '.join(s['training_devices'])}); {s['winner']}"
        else:
            text = ", ".join(f"{k} {v}" for k, v in s.items() if k != "seconds")
        lines.append(f"| {name} | {text} | {s.get('seconds', 0):.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--quick", action="store_true", help="tiny random model, a few steps: checks the script")
    p.add_argument("--only", help="comma-separated steps: env, peak, smoke, lora-sft, throughput, study")
    p.add_argument("--work", default=str(ROOT / "runs" / "gpu-check"))
    p.add_argument("--out", default=None, help="Markdown file (default docs/benchmarks.md; --device cpu: <work>/benchmarks.md)")
    p.add_argument("--json", default=None, help="also write the figures here")
    a = p.parse_args(argv)
    import torch

    if a.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: torch sees no CUDA device (torch.cuda.is_available() is False): run it on a machine with a GPU, "
              "or with --device cpu --quick to check the script", file=sys.stderr)
        return 2
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    only = set(a.only.split(",")) if a.only else {"env", "peak", "smoke", "lora-sft", "throughput", "study"}
    t0, steps, failed = time.time(), {}, False
    plan = [("env", lambda: step_env(a)), ("peak", lambda: step_peak(a)), ("smoke", lambda: step_smoke(a)),
            ("lora-sft", lambda: step_lora_sft(a, work)),
            ("throughput", lambda: step_throughput(a, work, steps.get("peak", {}).get("bf16_matmul_tflops"))),
            ("study", lambda: step_study(a, work))]
    for name, fn in plan:
        if name not in only:
            continue
        print(f"gpu_check: {name} ...", file=sys.stderr, flush=True)
        t = time.time()
        try:
            steps[name] = fn()
        except Exception as e:  # recorded; the remaining steps still run
            failed = True
            steps[name] = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-3000:]}
            print(f"gpu_check: {name} failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", file=sys.stderr)
        steps[name]["seconds"] = round(time.time() - t, 1)
    result = {"when": time.strftime("%Y-%m-%d %H:%M"), "argv": argv if argv is not None else sys.argv[1:], "steps": steps,
              "seconds": round(time.time() - t0, 1)}
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2))
    from eval_shared import write_section

    out = Path(a.out) if a.out else (ROOT / "docs" / "benchmarks.md" if a.device == "cuda" else work / "benchmarks.md")
    write_section(out, render(result), [result], start=START, end=END, tag=TAG, title=TITLE)
    print(render(result))
    print(f"wrote {out}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
