"""Where a LoRA SFT study arm's memory goes: the process's resident peak in each phase of one arm
(load, training steps, validation, export, then evaluation: model load, label scoring, generation),
all in one process as a study runs them.

    python benchmarks/memory_phases.py                      # SST-2 arm of the default model, ~5 min
    python benchmarks/memory_phases.py --set training.gradient_checkpointing=true --set training.base_dtype=fp32
    python benchmarks/memory_phases.py --quick              # tiny random model: checks the plumbing

Each phase starts a new resident high-water window (/proc/self/clear_refs, Linux), so its figure is
the peak reached during that phase (what was already resident included). The arm is the SST-2
study's `lora-sft` (examples/studies/sst2.yaml: LoRA, batch 8, packed rows of 512 tokens) on
data-shared/sst2 (examples/prepare_shared.py --only sst2), with --n training sentences and
--max-steps steps; `--set` adds any training override.
"""

from __future__ import annotations

import argparse
import functools
import gc
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from tunesmith.training.runtime import release_free_memory  # noqa: E402

START, END, TAG = "<!-- memory-phases:start -->", "<!-- memory-phases:end -->", "memory-phases:data"
TITLE = "### Memory per phase of a LoRA SFT study arm"


def _status(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Phases:
    """Attributes the resident high-water mark to named phases, in order."""

    def __init__(self):
        self.rows: list[dict] = []
        self.current, self.t = "start", time.perf_counter()
        self._reset()

    @staticmethod
    def _reset():
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
        except OSError:
            pass

    def mark(self, name: str) -> None:
        """Close the current phase (its peak and time) and open `name`."""
        peak, now = _status("VmHWM"), time.perf_counter()
        if self.rows and self.rows[-1]["phase"] == self.current:  # a phase re-entered (training between validations)
            self.rows[-1]["peak_mib"] = max(self.rows[-1]["peak_mib"], peak)
            self.rows[-1]["seconds"] += now - self.t
        else:
            self.rows.append({"phase": self.current, "peak_mib": peak, "seconds": now - self.t})
        self.rows[-1]["end_rss_mib"] = _status("VmRSS")
        gc.collect()
        release_free_memory()  # freed memory back to the OS, so each phase's peak is its own
        self._reset()
        self.current, self.t = name, now

    def wrap(self, module, attr: str, name: str, after: str) -> None:
        """Make module.attr its own phase `name`; `after` is the phase that resumes when it returns."""
        fn = getattr(module, attr)

        @functools.wraps(fn)
        def wrapped(*a, **k):
            self.mark(name)
            try:
                return fn(*a, **k)
            finally:
                self.mark(after)

        setattr(module, attr, wrapped)


def run(a) -> tuple[list[dict], dict]:
    from tunesmith import api
    from tunesmith.answering import Answerer
    from tunesmith.eval import runner
    from tunesmith.eval.config import EvalConfig
    from tunesmith.regimens import sft

    ph = Phases()
    ph.mark("imports")
    tmp = Path(tempfile.mkdtemp(prefix="memory-phases-"))
    model = a.model
    if a.quick:
        from vs_trl import quick_model

        from tunesmith.models.builtins import DEFAULT_MODEL
        from tunesmith.models.loading import load_tokenizer

        model = str(quick_model(tmp, load_tokenizer(DEFAULT_MODEL)))
    train = tmp / "train.jsonl"
    train.write_text("".join(Path(a.data).read_text().splitlines(keepends=True)[: a.n]))
    ph.wrap(sft, "load_trainable", "train: load model", "train: steps")
    ph.wrap(sft, "mean_loss", "train: validation loss", "train: steps")
    ph.wrap(sft, "save_model", "train: export", "train: steps")
    overrides = [f"data.train={train}", f"model.name={model}", "adapter.mode=lora", "training.batch_size=8",
                 "training.learning_rate=0.001", f"training.max_steps={a.max_steps}", "data.val_fraction=0.05",
                 f"training.eval_every={a.max_steps}", "name=arm", f"output_dir={tmp / 'runs'}", *a.set]
    ph.mark("train: setup")
    result = api.train(None, overrides, progress=False)
    ph.mark("after training (objects freed)")
    ph.wrap(Answerer, "load", "eval: load model", "eval: other")
    ph.wrap(runner, "_classify", "eval: label scoring", "eval: other")
    cfg = EvalConfig(data=a.test, task="classification", labels=["negative", "positive"], batch_size=16, limit=a.eval_n,
                     output_dir=str(tmp / "runs"))
    runner.evaluate(result["run_dir"], cfg, progress=False, force=True)
    ph.mark("eval: generation")
    from tunesmith.generation import GenerationSettings, generate_batch

    ans = Answerer.load(result["run_dir"])
    prompts = [[{"role": "user", "content": f"Write a sentence about the number {i}."}] for i in range(16)]
    generate_batch(ans.model, ans.tok, prompts, GenerationSettings(max_new_tokens=32), batch_size=16)
    ph.mark("end")
    return ph.rows, result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--data", default=str(ROOT / "data-shared" / "sst2" / "train.jsonl"))
    p.add_argument("--test", default=str(ROOT / "data-shared" / "sst2" / "test.jsonl"))
    p.add_argument("--n", type=int, default=600, help="training sentences")
    p.add_argument("--eval-n", type=int, default=100, help="test sentences scored")
    p.add_argument("--max-steps", type=int, default=6)
    p.add_argument("--set", action="append", default=[], help="extra training override, e.g. training.gradient_checkpointing=true")
    a = p.parse_args(argv)
    rows, result = run(a)
    label = ", ".join(a.set) or "defaults"
    print(f"| phase | peak RSS | RSS after | seconds |   ({label}; training peak in run.json "
          f"{result['peak_memory_mib'] / 1024:.2f} GiB, {result['tokens_per_s']} tok/s)")
    for r in rows:
        if r["phase"] not in ("start", "eval: other", "end"):
            print(f"| {r['phase']} | {r['peak_mib'] / 1024:.2f} GiB | {r['end_rss_mib'] / 1024:.2f} GiB | {r['seconds']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
