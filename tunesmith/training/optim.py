"""The step budget, optimizer and learning-rate schedule every weight-training regimen uses."""

from __future__ import annotations

import math

import torch

from tunesmith.training.adapters import param_groups
from tunesmith.training.schedules import lr_factor


def step_budget(n_rows: int, tc) -> tuple[int, int]:
    """(optimizer steps per epoch, total steps) for n_rows rows under a TrainingConfig."""
    micro_per_epoch = math.ceil(n_rows / tc.batch_size)
    steps_per_epoch = math.ceil(micro_per_epoch / tc.gradient_accumulation_steps)
    return steps_per_epoch, tc.max_steps or max(1, math.ceil(tc.epochs * steps_per_epoch))


def fused_supported(params) -> bool | None:
    """True where torch has a fused AdamW kernel for these parameters (CPU and CUDA, floating
    point); None lets torch pick its default (foreach) elsewhere."""
    devices = {p.device.type for p in params}
    return True if params and devices <= {"cpu", "cuda"} and all(p.is_floating_point() for p in params) else None


def build_optimizer(model, tc, total_steps: int):
    """(trainable params, AdamW with decay on matrices only, warm-up + decay LambdaLR)."""
    warmup = round(tc.warmup_ratio * total_steps)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(param_groups(model, tc.weight_decay), lr=tc.learning_rate, betas=tuple(tc.adam_betas),
                                  fused=fused_supported(params) if getattr(tc, "fused_optimizer", False) else None)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total=total_steps, warmup=warmup, kind=tc.scheduler, min_ratio=tc.min_lr_ratio)
    )
    return params, optimizer, scheduler
