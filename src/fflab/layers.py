"""FF layers: length normalization, the dense FF layer and peer normalization (paper section 2).

An FF layer maps its (normalized) input to ReLU activities ``h`` *before* normalization; the
goodness of ``h`` is the layer's own objective, and only ``normalize(h)`` is passed upward, so the
next layer sees the orientation of the activity vector and never the goodness that decided it.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .goodness import default_threshold, ff_loss, get_goodness


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
        get_goodness(goodness)  # validate early
        if block_size and (block_size < 0 or num_units % block_size):
            raise ValueError(f"block_size={block_size} must divide the layer's {num_units} units")
        self.num_units = num_units
        self.goodness_name = goodness
        # Block goodness (paper section 7): each block of `block_size` units has its own goodness
        # and its own positive/negative decision; the threshold is per block.
        self.block_size = int(block_size)
        units_per_decision = self.block_size or num_units
        self.threshold = (default_threshold(goodness, units_per_decision) if threshold is None
                          else float(threshold))
        self.peer_norm = float(peer_norm)
        self.peer_momentum = float(peer_momentum)
        # Running mean of each unit's positive-pass activity (official code starts it at 0.5).
        self.register_buffer("peer_mean", torch.full((num_units,), 0.5))

    def goodness(self, h: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B,)."""
        return get_goodness(self.goodness_name)(fp32_accum(h))

    def block_goodness(self, h: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, D // block_size) goodness of each block, or (B,) without blocks."""
        if not self.block_size:
            return self.goodness(h)
        return self.goodness(h.reshape(h.shape[0], -1, self.block_size))

    def local_loss(self, h_pos: torch.Tensor, h_neg: torch.Tensor) -> torch.Tensor:
        """The layer's own objective: FF loss plus the peer-normalization term.

        Peer normalization (official code): the gradient wrt unit j's activity gets
        ``peer_norm * (mean_k m_k - m_j)`` added in the direction that *raises* the objective,
        where m is the running mean of positive-pass activities, so rarely-active units are
        pushed up and always-active units down. As a loss term: ``-(c * h_pos).sum(1).mean()``
        with c detached.
        """
        loss = ff_loss(self.block_goodness(h_pos), self.block_goodness(h_neg), self.threshold)
        if self.peer_norm > 0 and h_pos.numel():
            if self.training:
                with torch.no_grad():
                    self.peer_mean.mul_(self.peer_momentum).add_(
                        h_pos.detach().float().mean(0), alpha=1 - self.peer_momentum)
            c = self.peer_norm * (self.peer_mean.mean() - self.peer_mean)
            loss = loss - (h_pos * c.to(h_pos.dtype)).sum(-1).mean()
        return loss


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
