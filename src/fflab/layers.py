"""FF layers: length normalization, the layer objective and the dense FF layer (paper section 2).

An FF layer maps its (normalized) input to ReLU activities ``h`` *before* normalization; the
goodness of ``h`` is the layer's own objective, and only ``normalize(h)`` is passed upward, so the
next layer sees the orientation of the activity vector and never the goodness that decided it.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import objective


def fp32_accum(h: torch.Tensor) -> torch.Tensor:
    """``h`` in fp32 if it is bf16/fp16 (sums of 2000 squares need fp32 accumulation), else as is
    (so float64 nets stay float64)."""
    return h.float() if h.dtype in (torch.bfloat16, torch.float16) else h


def normalize(h: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Length normalization without mean subtraction: ``h / (eps + rms(h))``. (B, D) -> (B, D).

    The official code divides by the root mean square, so a normalized vector has mean square 1
    whatever its width; the next layer's fan-in scaling then needs no width correction.
    """
    h = fp32_accum(h)
    return h / (eps + h.square().mean(-1, keepdim=True).sqrt())


class FFLayer(nn.Module):
    """Shared behaviour of FF layers: goodness, threshold, local loss and peer normalization.

    Subclasses implement ``forward(x) -> h`` (pre-normalization ReLU activities, (B, D)).
    """

    num_units: int

    def _init_objective(self, num_units: int, goodness: str, threshold: float | None,
                        peer_norm: float, peer_momentum: float, block_size: int = 0) -> None:
        self.goodness_fn = objective.get_goodness(goodness)  # validates the name early
        if block_size and (block_size < 0 or num_units % block_size):
            raise ValueError(f"block_size={block_size} must divide the layer's {num_units} units")
        self.num_units = num_units
        self.goodness_name = goodness
        # Block goodness (paper section 7): each block of `block_size` units has its own goodness
        # and its own positive/negative decision; the threshold is per block.
        self.block_size = int(block_size)
        units_per_decision = self.block_size or num_units
        self.threshold = (self.goodness_fn.default_threshold(units_per_decision) if threshold is None
                          else float(threshold))
        self.peer_norm = float(peer_norm)
        self.peer_momentum = float(peer_momentum)
        # The batch mean that updates the peer mean; a data-parallel run averages it over its
        # processes (``fflab.distributed``), so every process keeps the running mean of one.
        self.batch_mean: Callable[[torch.Tensor], torch.Tensor] = lambda m: m
        # Running mean of each unit's positive-pass activity (official code starts it at 0.5).
        self.register_buffer("peer_mean", torch.full((num_units,), 0.5))

    def goodness(self, h: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B,)."""
        return self.goodness_fn(fp32_accum(h))

    def _blocks(self, h: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, blocks, units per block): one goodness decision per block."""
        return h.reshape(h.shape[0], -1, self.block_size or self.num_units)

    def block_goodness(self, h: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, D // block_size) goodness of each block, or (B,) without blocks."""
        if not self.block_size:
            return self.goodness(h)
        return self.goodness(self._blocks(h))

    def local_loss(self, h_pos: torch.Tensor, h_neg: torch.Tensor) -> torch.Tensor:
        """The layer's own objective (``fflab.objective``): FF loss plus the peer-normalization
        term ``-(c * h_pos).sum(1).mean()`` with the push c detached; autograd differentiates it."""
        loss = objective.ff_loss(self.block_goodness(h_pos), self.block_goodness(h_neg), self.threshold)
        if self.peer_norm > 0 and h_pos.numel():
            if self.training:
                objective.peer_mean_update(self.peer_mean, h_pos, self.peer_momentum, self.batch_mean)
            c = objective.peer_push(self.peer_mean, self.peer_norm)
            loss = loss - (h_pos * c.to(h_pos.dtype)).sum(-1).mean()
        return loss

    @torch.no_grad()
    def local_grad(self, h: torch.Tensor, num_pos: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``local_loss`` differentiated by hand, for the engines that bypass autograd.

        h: activities of [positives; negatives] (N, D), the first ``num_pos`` rows positive.
        Returns (dL/dh, loss), dL/dh in fp32. For h = relu(z) it is also dL/dz: the goodness
        terms vanish where h = 0 and the peer term is applied at active units only.
        """
        hf = fp32_accum(h)
        hb = hf.view(hf.shape[0], -1, self.block_size or self.num_units)    # (N, blocks, units)
        g = self.goodness_fn(hb)                                               # (N, blocks)
        loss = objective.ff_loss(g[:num_pos], g[num_pos:], self.threshold)
        dh = self.goodness_fn.grad(hb, objective.ff_loss_grad(g, num_pos, self.threshold)).view_as(hf)
        if self.peer_norm > 0 and self.training:
            objective.peer_mean_update(self.peer_mean, hf[:num_pos], self.peer_momentum, self.batch_mean)
            c = objective.peer_push(self.peer_mean, self.peer_norm)
            dh[:num_pos] -= (hf[:num_pos] > 0).to(dh.dtype) * (c / num_pos)
            loss = loss - (hf[:num_pos] * c).sum(-1).mean()
        return dh, loss


class FFDense(FFLayer):
    """Fully connected FF layer: ``h = relu(x W^T + b)``, (B, in) -> (B, out).

    Weights start as N(0, 1/fan_in) as in the official code, biases at 0.
    """

    def __init__(self, in_features: int, out_features: int, *, goodness: str = "ssq",
                 threshold: float | None = None, peer_norm: float = 0.0,
                 peer_momentum: float = 0.9, block_size: int = 0) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / math.sqrt(in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self._init_objective(out_features, goodness, threshold, peer_norm, peer_momentum, block_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(F.linear(x, self.weight, self.bias))

    def extra_repr(self) -> str:
        return (f"{self.in_features}, {self.out_features}, goodness={self.goodness_name}, "
                f"threshold={self.threshold:g}, peer_norm={self.peer_norm:g}")
