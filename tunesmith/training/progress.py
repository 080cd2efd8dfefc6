"""What a user sees and keeps while a model trains: a progress bar with loss, tokens/s and ETA,
metrics.jsonl lines, and TensorBoard event files. Under torchrun only rank 0 writes any of them;
the other ranks' loggers do nothing."""

from __future__ import annotations

import sys
from pathlib import Path

from tqdm.auto import tqdm

from tunesmith.runs import MetricsLog
from tunesmith.training import distributed as dist


class TrainLogger:
    def __init__(self, run_dir: Path, total_steps: int, resume_step: int | None, *, enabled: bool = True):
        self.writes = dist.is_main()
        enabled = enabled and self.writes
        self.metrics = MetricsLog(Path(run_dir) / "metrics.jsonl", resume_step=resume_step) if self.writes else None
        self.enabled = enabled
        self.bar = tqdm(total=total_steps, initial=resume_step or 0, unit="step", dynamic_ncols=True,
                        disable=not enabled, file=sys.stderr, desc="train")
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events past the checkpoint, which a resumed run writes again.
            if self.writes:
                self.tb = SummaryWriter(str(Path(run_dir) / "tensorboard"), purge_step=resume_step)
        except ImportError:  # tensorboard is optional; metrics.jsonl has the same numbers
            self.tb = None

    def header(self, text: str) -> None:
        if self.enabled:
            tqdm.write(text, file=sys.stderr)

    def step(self, record: dict) -> None:
        if not self.writes:
            return
        self.metrics.log(record)
        if self.tb:
            for k in ("loss", "lr", "grad_norm", "tokens_per_s"):
                if record.get(k) is not None:
                    self.tb.add_scalar(f"train/{k}", record[k], record["step"])
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{record['loss']:.4f}", tok_s=f"{record['tokens_per_s']:.0f}", refresh=False)

    def validation(self, step: int, values: dict, select: str, best: float | None) -> None:
        """values: {"val_loss": ..., optionally "val_exact_match": ...}; `select` names the one that picks checkpoints."""
        if not self.writes:
            return
        self.metrics.log({"step": step, **values})
        if self.tb:
            for k, v in values.items():
                self.tb.add_scalar(f"validation/{k.removeprefix('val_')}", v, step)
        if self.enabled:
            shown = ", ".join(f"{k.removeprefix('val_').replace('_', ' ')} {v:.4f}" for k, v in values.items())
            tqdm.write(f"step {step}: validation {shown} (best {select.removeprefix('val_').replace('_', ' ')} {best:.4f})", file=sys.stderr)

    def close(self) -> None:
        self.bar.close()
        if self.tb:
            self.tb.close()
