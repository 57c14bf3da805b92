"""Backprop baselines in the same harness: the permutation-invariant MLP and the CNN of the
paper's MNIST comparisons (paper section 3.1)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import CommonConfig, OptimizerFields, check_choice
from ..errors import ConfigError
from ..nets import CNN, mlp
from ..optim import make_optimizer
from ..runtime import Runtime
from ..task import MNIST_SHAPE, DataShape, Task
from ._common import jitter


@dataclass(frozen=True)
class BPConfig(OptimizerFields, CommonConfig):
    """Backprop baselines (paper section 3.1)."""
    model: str = "mlp"                    # mlp | cnn
    hidden: tuple[int, ...] = (1000, 1000, 1000)
    lr_schedule: str = "cosine"
    dropout: float = 0.0


def bp_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
            rt: Runtime) -> torch.Tensor:
    """One backprop step with cross-entropy."""
    with rt.autocast():
        loss = F.cross_entropy(model(x).float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


def build(cfg: BPConfig, rt: Runtime, shape: DataShape = MNIST_SHAPE) -> Task:
    check_choice("model", cfg.model, ("mlp", "cnn"))
    if cfg.model == "mlp":
        if cfg.dropout:
            raise ConfigError("dropout is only used by model=cnn")
        model: nn.Module = mlp(shape.in_features, cfg.hidden, shape.num_classes)
    else:
        if shape != MNIST_SHAPE:
            raise ConfigError(f"model=cnn is the MNIST CNN (1x28x28 images, 10 classes); this data has "
                              f"{'x'.join(map(str, shape.image_shape))} images and {shape.num_classes} classes")
        model = CNN(dropout=cfg.dropout)
    model = model.to(rt.device)
    opt = make_optimizer(model.parameters(), name=cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum,
                         weight_decay=cfg.weight_decay)

    def step(x: torch.Tensor, y: torch.Tensor, g: torch.Generator, idx: torch.Tensor | None = None) -> torch.Tensor:
        if cfg.jitter:
            x = jitter(x, cfg.jitter, generator=g)
        return bp_step(model, opt, x, y, rt)

    @torch.no_grad()
    def evaluate(x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        wrong = 0
        for s in range(0, x.shape[0], 1000):
            with rt.autocast():
                wrong += (model(x[s:s + 1000]).argmax(1) != y[s:s + 1000]).sum()
        return {"error": (wrong / x.shape[0]).item()}

    return Task(modules={"model": model}, optimizers={"model": opt}, base_lrs={"model": cfg.lr},
                step=step, evaluate=evaluate)
