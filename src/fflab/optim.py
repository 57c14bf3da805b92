"""Optimizers and learning-rate schedules shared by every kind of run."""
from __future__ import annotations

import math

import torch

from .errors import ConfigError


def lr_factor(schedule: str, epoch: int, epochs: int) -> float:
    """Learning-rate multiplier for 0-based ``epoch``.

    linear_half: the official code's schedule, constant for the first half, then decayed
    linearly to ~0 (last epoch 2/epochs) over the second half.
    """
    if schedule == "constant":
        return 1.0
    if schedule == "linear_half":
        return min(1.0, 2.0 * (epochs - epoch) / epochs)
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * epoch / epochs))
    raise ConfigError(f"lr_schedule={schedule!r}: choose linear_half, cosine or constant")


def _fusable(params: list[torch.Tensor]) -> bool:
    """torch's single-kernel optimizers need floating tensors on CPU or CUDA."""
    return all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)


def make_optimizer(params, *, name: str, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    """Adam (L2 weight decay) or SGD with the official code's smoothing (``momentum`` is the
    weight on the old gradient average)."""
    params = list(params)
    if name == "adam":
        # fused: one kernel for the whole update instead of ~10 elementwise passes per tensor
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=_fusable(params))
    if name == "sgd":
        # dampening=momentum makes the buffer an exponential moving average of the gradient,
        # which is the official code's "smoothing 0.9" (grad_avg = 0.9 grad_avg + 0.1 grad).
        opt = torch.optim.SGD(params, lr=lr, momentum=momentum, dampening=momentum, weight_decay=weight_decay,
                              fused=_fusable(params))
        if momentum:
            # The average starts at 0, as the official smoothing does: torch's SGD would start
            # its buffer at the first gradient itself, undamped, making the first step
            # 1 / (1 - momentum) = 10 x the official one (with lr 0.01 it sent the 3 x 1000 net's
            # FF loss from 1.5e3 to 1.8e5 in one step).
            for p in params:
                opt.state[p]["momentum_buffer"] = torch.zeros_like(p)
        return opt
    raise ConfigError(f"optimizer={name!r}: choose adam or sgd")
