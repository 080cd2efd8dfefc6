"""Training on several processes under torchrun: the process group, each rank's share of a step,
the model wrapped for DDP or FSDP2, and the few collectives the training loops use.

Every function is a no-op (or the identity) when WORLD_SIZE is unset or 1, so that a
single-process run takes the code path and produces the numbers it always did. Nothing here is
CPU-specific: gloo on CPU and NCCL on GPUs go through the same calls.

How a step stays equal to the one-process step (the loops rely on this):
- every rank builds the same epoch order and the same step groups (they depend on the seed
  only) and computes the step's GLOBAL trained-token count, by which each rank divides its
  loss sum;
- `shard` hands each rank its part of the step's rows, with the same number of micro-batches
  on every rank (DDP and FSDP need every rank to run the same forward and backward passes);
- DDP and FSDP average gradients over the ranks; `weigh` multiplies each rank's loss by the
  world size so that the reduced gradient is the SUM over ranks, i.e. the one-process gradient.
"""

from __future__ import annotations

import contextlib
import os

import torch
import torch.distributed as dist
from torch import nn

from tunesmith.errors import TunesmithError

# Which regimens run under torchrun, and with which training.distributed modes.
# head and grpo: DDP only. grpo samples completions and scores reference log-probs by calling
# the model outside `wrap`'s forward, which FSDP's sharded weights do not allow; head's
# classifier export (merge_and_unload) needs whole weights. (dpo's reference log-probs are
# computed once, before the model is wrapped.)
SUPPORTED = {"sft": ("ddp", "fsdp"), "cpt": ("ddp", "fsdp"), "dpo": ("ddp", "fsdp"), "head": ("ddp",), "grpo": ("ddp",)}

_STATE = {"mode": None, "backend": None}


def env_world() -> int:
    """The world size torchrun announced (1 when not launched by torchrun)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1") or 1)
    except ValueError:
        return 1


def world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank; before the group exists (or after it is gone) torchrun's RANK."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0") or 0) if env_world() > 1 else 0


def is_main() -> bool:
    """Only rank 0 writes the run directory, logs, TensorBoard, progress and the exported model."""
    return rank() == 0


def mode() -> str | None:
    """'ddp' or 'fsdp' while a multi-process group is up, else None."""
    return _STATE["mode"] if world() > 1 else None


def check_supported(regimen: str, distributed: str) -> None:
    """A one-line error for a regimen or mode that cannot run on several processes."""
    modes = SUPPORTED.get(regimen)
    if not modes:
        ok = ", ".join(sorted(SUPPORTED))
        raise TunesmithError(f"regimen {regimen}: training on several processes (torchrun, --nproc) is supported for {ok}; "
                             f"run it in one process (drop --nproc)")
    if distributed not in modes:
        fsdp = ", ".join(r for r, m in SUPPORTED.items() if "fsdp" in m)
        raise TunesmithError(f"training.distributed={distributed} is supported for {fsdp}; use training.distributed=ddp for {regimen}")


def init(regimen: str, tc) -> bool:
    """Join the process group torchrun set up (RANK, WORLD_SIZE, MASTER_ADDR in the environment).
    Returns whether a group was started (False for one process, or when one already exists)."""
    if env_world() <= 1 or (dist.is_available() and dist.is_initialized()):
        return False
    check_supported(regimen, tc.distributed)
    from tunesmith.training.runtime import pick_device

    device = pick_device(tc.device)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", str(env_world())) or 1)
    if device.type == "cuda":
        if local > torch.cuda.device_count():
            raise TunesmithError(f"{local} processes on this machine but {torch.cuda.device_count()} GPU(s): start at most one "
                                 "process per GPU (--nproc), or train on CPU with training.device=cpu")
        # One GPU per process: torch.device("cuda") then means this rank's GPU everywhere.
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    elif not tc.threads:
        # Processes on one machine share its cores; torch's default (all cores each) oversubscribes.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
    backend = "nccl" if device.type == "cuda" else "gloo"
    # device_id binds the NCCL communicator to this rank's GPU (barriers need not guess it).
    gpu = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else None
    dist.init_process_group(backend, **({"device_id": gpu} if gpu is not None else {}))
    _STATE.update(mode=tc.distributed, backend=backend)
    return True


def destroy() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _STATE.update(mode=None, backend=None)


@contextlib.contextmanager
def session(regimen: str, tc):
    """The process group for the block (nothing happens for one process)."""
    started = init(regimen, tc)
    try:
        yield
    finally:
        if started:
            destroy()


def record() -> dict:
    """What run.json records about the processes ({} for one process: run.json unchanged)."""
    if world() <= 1:
        return {}
    return {"distributed": {"world_size": world(), "mode": _STATE["mode"], "backend": _STATE["backend"]}}


def layout() -> dict:
    """How a checkpoint is laid out: resuming needs the same world size and mode."""
    return {"world_size": world(), "distributed": mode()}


def barrier() -> None:
    if world() > 1:
        dist.barrier()


def seed_rank(seed: int) -> None:
    """Give each rank its own torch random stream after the (identical) model initialisation,
    so that dropout masks and sampled completions differ between ranks' rows."""
    if world() > 1:
        torch.manual_seed(seed * 1_000_003 + rank())


# --- the step's rows --------------------------------------------------------------------------

def shard(group: list[list]) -> list[tuple[list, float]]:
    """This rank's micro-batches of one optimizer step, as (rows, weight) pairs.

    `group` is the step's micro-batches as a one-process run makes them. When they divide evenly
    among the ranks, whole micro-batches go round-robin (per-process micro-batch = batch_size,
    accumulation = micro-batches / world); otherwise each micro-batch is split row-wise. Every
    rank gets the same number of micro-batches because DDP and FSDP need every rank to run the
    same passes; a rank whose share of a micro-batch is empty computes on a stand-in row with
    weight 0 (its gradient is zero, its loss is not counted)."""
    n = world()
    if n == 1:
        return [(mb, 1.0) for mb in group]
    r = rank()
    mine = group[r::n] if len(group) % n == 0 else [mb[r::n] for mb in group]
    return [(mb, 1.0) if mb else (group[0][:1], 0.0) for mb in mine]


def share(items: list) -> list[tuple[object, bool]]:
    """This rank's part of a list scored in pieces (validation batches) as (item, counted) pairs:
    items[rank::world], padded with uncounted stand-ins to the same length on every rank (FSDP
    needs every rank in each forward). Add the counted results up with `all_sum`."""
    n = world()
    if n == 1:
        return [(x, True) for x in items]
    mine = [(x, True) for x in items[rank()::n]]
    return mine + [(items[0], False)] * (-(-len(items) // n) - len(mine))


def weigh(loss: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """The loss to back-propagate on this rank. DDP and FSDP AVERAGE gradients over the ranks;
    each rank already divides by the whole step's token count, so the ranks' gradients must be
    SUMMED: multiplying by the world size turns the average into that sum. One process: `loss`."""
    if world() == 1:
        return loss
    return loss * (weight * world())


def all_sum(value: float) -> float:
    """The sum of a float over the ranks (for logging the step's loss)."""
    if world() == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return float(t.item())


def broadcast_object(obj):
    """Rank 0's value of a picklable object, on every rank."""
    if world() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(obj) -> list:
    """Every rank's value of a picklable object, in rank order ([obj] for one process)."""
    if world() == 1:
        return [obj]
    out = [None] * world()
    dist.all_gather_object(out, obj)
    return out


def _comm_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if _STATE["backend"] == "nccl" else torch.device("cpu")


# --- the model --------------------------------------------------------------------------------

class Calls(nn.Module):
    """Runs `fn(model, *args)` as its forward. The loops compute losses with functions of the
    model (they call its body and output layer separately), not with model.forward; DDP prepares
    its gradient reduction, and FSDP gathers the root's weights, only in a wrapped module's
    forward, so every loss computation goes through this one."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, fn, *args, **kwargs):
        return fn(self.model, *args, **kwargs)


def wrap(model: nn.Module, how: str | None = None) -> nn.Module:
    """The module to compute losses with: `net(loss_fn, batch)` runs `loss_fn(model, batch)`.
    One process: a plain Calls. ddp: DistributedDataParallel over it. fsdp: FSDP2's fully_shard
    on each decoder block, then on the whole (the root holds the embeddings, final norm and the
    output layer, which tied embeddings share). Build the optimizer AFTER wrapping: fully_shard
    replaces the parameters by sharded ones."""
    net = Calls(model)
    if world() == 1:
        return net
    how = how or _STATE["mode"]
    if how == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        dev = next(model.parameters()).device
        # broadcast_buffers=False: the buffers (rotary frequencies) are computed, never trained.
        # find_unused_parameters=False: every trainable parameter gets a gradient each step
        # (frozen ones are not registered with DDP at all).
        return DDP(net, device_ids=[dev.index] if dev.type == "cuda" else None, broadcast_buffers=False,
                   find_unused_parameters=False)
    from torch.distributed.fsdp import fully_shard

    layers = getattr(model.get_decoder(), "layers", None)
    if layers is None:
        raise TunesmithError("training.distributed=fsdp: the model's decoder has no .layers to shard; use training.distributed=ddp")
    for block in layers:
        fully_shard(block)
    fully_shard(net)
    return net


def unwrap(net: nn.Module) -> nn.Module:
    """The model inside `wrap`'s result."""
    return (net.module if _is_ddp(net) else net).model


def _is_ddp(net: nn.Module) -> bool:
    from torch.nn.parallel import DistributedDataParallel

    return isinstance(net, DistributedDataParallel)


def accumulating(net: nn.Module, last: bool):
    """Context for one micro-batch's forward and backward. Before the step's last micro-batch
    the gradients only accumulate locally (DDP's no_sync, FSDP's requires_gradient_sync=False):
    the last backward reduces their sum once instead of once per micro-batch."""
    if world() == 1:
        return contextlib.nullcontext()
    if _is_ddp(net):
        return net.no_sync() if not last else contextlib.nullcontext()
    net.set_requires_gradient_sync(last)
    return contextlib.nullcontext()


def clip_grad_norm(params, max_norm: float | None) -> torch.Tensor:
    """torch's clip_grad_norm_ (the norm over all ranks' shards under FSDP) as a plain tensor."""
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm else float("inf"))
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


def evaluate(net: nn.Module, fn, *args, **kwargs):
    """fn(model, *args) without gradients, the same value on every rank. `fn` runs on every rank
    (FSDP needs every rank in each forward): it scores all the rows on each, or its share when
    it splits the work itself (batching.mean_loss). Rank 0's figure is broadcast, so early
    stopping and best-checkpoint decisions agree even where kernels are not bitwise
    deterministic."""
    with torch.no_grad():
        # DDP's forward outside a backward would leave its reducer waiting: call the model.
        value = fn(unwrap(net), *args, **kwargs) if _is_ddp(net) else net(fn, *args, **kwargs)
    return broadcast_object(value)


def full_state_dict(model: nn.Module) -> dict | None:
    """Under FSDP, the whole (unsharded) state dict gathered on CPU for rank 0 to export; every
    rank must call it. None otherwise (the model's own weights are whole)."""
    if mode() != "fsdp":
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    whole = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    # Gathered tensors no longer share storage: drop the second name of a tied weight (the output
    # layer of tied embeddings), as save_pretrained does for the model's own weights.
    tied = {n for n, _ in model.named_parameters(remove_duplicate=False)} - {n for n, _ in model.named_parameters()}
    return {k: v for k, v in whole.items() if k not in tied}
