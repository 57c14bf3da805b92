"""What a kind of run plugs into the training loop (``fflab.train.fit``)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from . import runs


@dataclass(frozen=True)
class DataShape:
    """What the data looks like to a model: each image's (C, H, W) and the number of classes.
    Builders read it for their input width, the label overlay, heads and local geometry."""
    image_shape: tuple[int, int, int] = (1, 28, 28)
    num_classes: int = 10

    @property
    def in_features(self) -> int:
        c, h, w = self.image_shape
        return c * h * w


MNIST_SHAPE = DataShape()


@dataclass
class Task:
    """A kind of run's modules, optimizers, minibatch ``step`` and ``evaluate``."""
    modules: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    base_lrs: dict[str, float]
    # step(x, y, g, idx): one update on images x, labels y; idx are their training-set indices
    # (None when the caller has none, e.g. benchmarks on synthetic data).
    step: Callable[..., torch.Tensor]
    evaluate: Callable[[torch.Tensor, torch.Tensor], dict[str, float]]
    # Optional end-of-run extras (e.g. goodness histograms) written into the run folder.
    finalize: Callable[[runs.Run, dict[str, torch.Tensor]], None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # Training state that is not a module or an optimizer (e.g. cached per-image probabilities):
    # saved in state.pt at every checkpoint and restored on resume. Tensors and plain values only.
    get_state: Callable[[], dict[str, Any]] | None = None
    set_state: Callable[[dict[str, Any]], None] | None = None
    # Called by ``fit`` once the data are loaded (before any step), e.g. to size per-image caches.
    setup: Callable[[dict[str, torch.Tensor]], None] | None = None
    # What the task resolved from its config (e.g. engine=auto -> "shared"): printed when the run
    # starts and written into results.json, so a run's numbers say what made them.
    info: dict[str, str] = field(default_factory=dict)
    # The engine object, where the kind has one (benchmarks time its parts).
    engine: Any = None
    # A kind that looks ahead within an epoch (the layer pipeline) gets the epoch's batches
    # first: begin_epoch(fetch, steps), fetch(i) -> (x, y, idx) of the epoch's i-th batch; and
    # end_epoch() before the epoch's evaluation and checkpoint.
    begin_epoch: Callable[[Callable[[int], tuple], int], None] | None = None
    end_epoch: Callable[[], None] | None = None

    def train(self, mode: bool = True) -> None:
        for m in self.modules.values():
            m.train(mode)


def epoch_generator(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    """A fresh generator per epoch, derived from (seed, epoch): resuming at any epoch boundary
    replays exactly the randomness an uninterrupted run would have used."""
    g = torch.Generator(device=device)
    g.manual_seed(seed * 1_000_003 + epoch)
    return g
