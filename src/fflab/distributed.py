"""Training over processes launched by ``torchrun`` (PyTorch's ``torch.distributed``).

Two modes (config key ``parallel``). ``data`` (the default under torchrun) is described here;
``pipeline`` (each process owns a block of layers) is ``fflab.pipeline``.

``torchrun --nproc-per-node N -m fflab train RECIPE ...`` starts N processes; each reads the whole
dataset, draws the same shuffled batches (same seed), and trains on its 1/N of every global batch.
After each backward-free local update the processes average their gradients (one all-reduce of
one flat buffer per optimizer step), so with the same seed and global batch they make the same
updates as one process up to float rounding. Where supervised FF draws randomness over a batch
(jitter, hard negatives), every process draws it for the whole global batch from the same
generator and takes its share, so the draws are those of one process too. Rank 0 alone writes
the run folder and its checkpoints; every rank can resume from them. gloo on CPU, NCCL on GPU;
nothing home-made for transport or launch.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch

from .errors import ConfigError

RENDEZVOUS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
MODES = ("auto", "data", "pipeline")


@dataclass(frozen=True)
class Parallel:
    """This process's place in the job: rank, world size, backend and mode."""
    rank: int = 0
    world_size: int = 1
    backend: str = ""
    mode: str = "none"        # none | data | pipeline

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """This rank's rows of a batch of n (``check_batch`` made n divisible)."""
        per = n // self.world_size
        return slice(self.rank * per, (self.rank + 1) * per)

    def record(self) -> dict[str, object]:
        """What ``env.json`` records, so a run's numbers say what made them."""
        return {"world_size": self.world_size, "backend": self.backend or None, "parallel": self.mode}


SINGLE = Parallel()


def from_environment(device: torch.device, mode: str = "auto") -> Parallel:
    """The job this process belongs to: a single process unless ``WORLD_SIZE`` > 1, in which case
    torchrun's rendezvous variables must all be set; joins the process group once. ``mode``:
    the config's ``parallel`` (auto: data parallel)."""
    if mode not in MODES:
        raise ConfigError(f"parallel={mode!r}: choose one of {', '.join(MODES)}")
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return SINGLE
    import torch.distributed as dist
    missing = [k for k in RENDEZVOUS if not os.environ.get(k)]
    if missing:
        raise ConfigError(f"WORLD_SIZE={world} but {', '.join(missing)} not set: launch with torchrun "
                          f"(e.g. torchrun --standalone --nproc-per-node {world} -m fflab train ...)")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return Parallel(dist.get_rank(), dist.get_world_size(), backend, "pipeline" if mode == "pipeline" else "data")


# Bytes this process has handed to the transport (collectives counted as a ring sends them):
# ``fit`` logs the per-step mean, so each mode's traffic is measured, not estimated.
_sent = [0]


def bytes_sent() -> int:
    return _sent[0]


def _count(t: torch.Tensor, factor: float = 1.0) -> None:
    _sent[0] += int(t.numel() * t.element_size() * factor)


def check_batch(batch_size: int, par: Parallel) -> None:
    if par.active and par.mode == "data" and batch_size % par.world_size:
        raise ConfigError(f"batch_size={batch_size} does not split over {par.world_size} processes: "
                          f"use a multiple of {par.world_size}")


def mean_over_ranks(tensors: Sequence[torch.Tensor], par: Parallel) -> None:
    """Average ``tensors`` over the processes, in place, in one all-reduce of one flat buffer."""
    if not par.active or not tensors:
        return
    import torch.distributed as dist
    flat = torch.cat([t.reshape(-1).float() for t in tensors])
    _count(flat, 2 * (par.world_size - 1) / par.world_size)   # a ring all-reduce's share
    dist.all_reduce(flat)
    flat /= par.world_size
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset:offset + n].view_as(t))
        offset += n


def average_before_step(modules: Iterable[torch.nn.Module], optimizers: Iterable[torch.optim.Optimizer],
                        par: Parallel) -> None:
    """Data parallel for a kind whose step trains on this rank's share like a whole batch: each
    optimizer's gradients are averaged over the processes just before its step (one all-reduce
    per step, through torch's optimizer step pre-hook), and every FF layer's running peer mean
    is updated from the mean over the processes. Random draws inside the step (negatives, masks)
    are each rank's own, so the updates are those of one process in distribution, not draw for
    draw."""
    def hook(opt: torch.optim.Optimizer, args, kwargs) -> None:
        mean_over_ranks([p.grad for group in opt.param_groups for p in group["params"] if p.grad is not None], par)

    for opt in optimizers:
        opt.register_step_pre_hook(hook)
    average_peer_means(modules, par)


def average_peer_means(modules: Iterable[torch.nn.Module], par: Parallel) -> None:
    """Every FF layer in ``modules`` updates its running peer mean from the batch mean over the
    processes (``FFLayer.batch_mean``), so each process keeps the running mean of one process."""
    for module in modules:
        for m in module.modules():
            if hasattr(m, "batch_mean"):
                m.batch_mean = lambda mean: mean_over_ranks([mean], par) or mean


def combine_loss(t: torch.Tensor, par: Parallel) -> None:
    """A loss summed over the job, in place: data parallel averages the ranks' shares of one
    batch; a pipeline sums its stages' layers (each rank's loss covers its own layers)."""
    if not par.active:
        return
    import torch.distributed as dist
    dist.all_reduce(t)
    if par.mode == "data":
        t /= par.world_size


def send(t: torch.Tensor, dst: int, tag: int):
    """Start sending ``t`` to rank ``dst`` (``isend``); returns the request to wait on."""
    import torch.distributed as dist
    _count(t)
    return dist.isend(t.contiguous(), dst, tag=tag)


def recv(shape: Sequence[int], src: int, tag: int, device: torch.device) -> torch.Tensor:
    """A float32 tensor of ``shape`` received from rank ``src`` (waits for it)."""
    import torch.distributed as dist
    t = torch.empty(tuple(shape), device=device)
    dist.irecv(t, src, tag=tag).wait()
    return t


def broadcast_from_owners(tensors: Sequence[tuple[torch.Tensor, int]], par: Parallel) -> None:
    """Each tensor overwritten, on every rank, by its owner rank's copy (in place)."""
    if not par.active:
        return
    import torch.distributed as dist
    for t, owner in tensors:
        if par.rank == owner:
            _count(t, par.world_size - 1)
        dist.broadcast(t, owner)


def gather_rows(t: torch.Tensor, par: Parallel) -> torch.Tensor:
    """The rows of every rank's ``t``, in rank order (each rank holds an equal share)."""
    if not par.active:
        return t
    import torch.distributed as dist
    parts = [torch.empty_like(t) for _ in range(par.world_size)]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def sum_over_ranks(values: dict[str, float], par: Parallel, device: torch.device) -> dict[str, float]:
    """Sum each value over the processes (e.g. error counts of each rank's share of a test set)."""
    if not par.active:
        return values
    import torch.distributed as dist
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return dict(zip(keys, t.tolist()))


def check_same(text: str, what: str, par: Parallel, device: torch.device) -> None:
    """A ConfigError on every rank unless every rank holds the same ``text`` (a config, a
    data fingerprint): a job whose processes disagree would train on nonsense."""
    if not par.active:
        return
    import torch.distributed as dist
    digest = torch.tensor(list(hashlib.sha256(text.encode()).digest()[:8]), dtype=torch.int64, device=device)
    parts = [torch.empty_like(digest) for _ in range(par.world_size)]
    dist.all_gather(parts, digest)
    differ = [r for r, p in enumerate(parts) if not torch.equal(p, parts[0])]
    if differ:
        raise ConfigError(f"rank(s) {differ} have a different {what} from rank 0: every process must "
                          f"run the same command on the same data")


def barrier(par: Parallel) -> None:
    if par.active:
        import torch.distributed as dist
        dist.barrier()


def evaluate_sharded(evaluate: Callable[[torch.Tensor, torch.Tensor], dict[str, float]], x: torch.Tensor,
                     y: torch.Tensor, par: Parallel, device: torch.device) -> dict[str, float]:
    """``evaluate(x, y)``; in a data-parallel job each rank evaluates its share and the rates are
    combined weighted by the shares' sizes."""
    if not par.active:
        return evaluate(x, y)
    xs, ys = torch.tensor_split(x, par.world_size)[par.rank], torch.tensor_split(y, par.world_size)[par.rank]
    local = evaluate(xs, ys) if xs.shape[0] else {}
    sums = sum_over_ranks({k: v * xs.shape[0] for k, v in local.items()}, par, device)
    return {k: v / x.shape[0] for k, v in sums.items()}


def fingerprint(data: dict[str, torch.Tensor]) -> str:
    """Sizes and sums of a dataset's arrays: equal on every rank of a job that reads the same data."""
    return ";".join(f"{k}:{tuple(v.shape)}:{float(v.double().sum()):.6g}" for k, v in sorted(data.items()))
