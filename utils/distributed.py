"""Rank/world helpers that also work in a plain process with no process group."""

import os

import torch
import torch.distributed as dist


def is_dist() -> bool:
    """True when a torch.distributed process group is up."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank along dim 0, in rank order, keeping gradients.

    The backward sums the incoming gradients of each slot over ranks (as diffdist did). Without a
    process group, or with one process, this is the identity.
    """
    if get_world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()), dim=0)


def init_distributed() -> torch.device:
    """Join the process group that torchrun (or torch.distributed.launch) describes, if any; return the device.

    Without ``WORLD_SIZE`` > 1 in the environment nothing is initialised (a plain single process). The backend is
    NCCL when CUDA is available and gloo otherwise; each process uses ``cuda:LOCAL_RANK`` (modulo the visible
    GPUs) or the CPU. An existing process group is kept. A group restarted by ``torchrun --max-restarts`` keeps its
    keys apart from the dead group's in torchrun's store (``TORCHELASTIC_RESTART_COUNT``).
    """
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if int(os.environ.get("WORLD_SIZE", 1)) > 1 and not is_dist():
        store, rank, world_size = next(dist.rendezvous("env://"))
        # torchrun keeps one store for all restarts of the group: the keys of a group that died (its ranks' gloo
        # addresses) would be read by the restarted one, which then connects to dead ranks. Each attempt gets its own.
        store = dist.PrefixStore(f"attempt_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, store=store, rank=rank, world_size=world_size,
                                device_id=device if device.type == "cuda" else None)
    return device


def close_distributed() -> None:
    """Leave the process group, if one was joined (:func:`init_distributed`)."""
    if is_dist():
        dist.destroy_process_group()


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of ``x`` over ranks (in place; the identity without a process group)."""
    if is_dist():
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DistributedDataParallel wrapper (``model`` itself when it is not wrapped)."""
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model
