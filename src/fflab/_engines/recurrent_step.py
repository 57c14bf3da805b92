"""The recurrent net's training step, computed the way ``engine=`` chooses (paper section 4).

- ``shared`` (what ``auto`` picks): ``recurrent.recurrent_backward``, the local gradients by hand
  with the clamped image's and label's products made once per step;
- ``autograd``: the reference; autograd differentiates each layer's ``local_loss`` at every
  iteration of ``RecurrentFFNet.step``.
Both make the same updates up to float rounding (tests/test_recurrent.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import check_choice
from ..runtime import Runtime
from . import recurrent

ENGINES = ("auto", "shared", "autograd")


@dataclass
class _Init:
    """The autograd engine's bottom-up pass: the states at t = 0 only."""
    init: list[torch.Tensor]


class RecurrentEngine:
    """``bottom_up(x)`` (the states at t = 0, shared by the positive and negative runs and by the
    head) -> ``ff_grads(bu, x, top)`` (every layer's gradients of its FF loss summed over the
    iterations, set as ``.grad``; returns the loss)."""

    def __init__(self, name: str, net, iterations: int, rt: Runtime) -> None:
        self.name, self.net, self.iterations, self.rt = name, net, iterations, rt

    def bottom_up(self, x: torch.Tensor):
        if self.name == "shared":
            return recurrent.bottom_up(self.net, x, self.rt.product_dtype)
        with self.rt.autocast():
            return _Init(self.net.init_states(x))

    def ff_grads(self, bu, x: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
        """top: (2B, N) the normalized label layer, positives first."""
        if self.name == "shared":
            return recurrent.recurrent_backward(self.net, bu, top, self.iterations, dtype=self.rt.product_dtype)
        b = x.shape[0]
        x_pn = torch.cat([x, x])
        states = [torch.cat([h, h]) for h in bu.init]
        loss = torch.zeros((), device=x.device)
        for _ in range(self.iterations):
            with self.rt.autocast():
                states = self.net.step(states, x_pn, top)
            loss = loss + sum(layer.local_loss(h[:b], h[b:]) for layer, h in zip(self.net.layers, states))
        loss.backward()
        return loss.detach()


def recurrent_engine(requested: str, net, iterations: int, rt: Runtime) -> RecurrentEngine:
    check_choice("engine", requested, ENGINES)
    return RecurrentEngine("autograd" if requested == "autograd" else "shared", net, iterations, rt)
