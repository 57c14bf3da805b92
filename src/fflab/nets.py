"""Networks: the greedy FF stack, the softmax readout head, and the backprop baselines.

Paper section 2 (the FF stack with length normalization between layers), section 3.3 (the
one-pass softmax readout) and section 3.1 (backprop baselines).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layers import FFDense, FFLayer, normalize


class FFNet(nn.Module):
    """A stack of FF layers trained greedily-in-parallel (paper section 2).

    ``forward(x)`` returns the pre-normalization activities of every layer. The input is
    length-normalized first (official code), and each layer reads the *normalized, detached*
    output of the layer below, so no derivative can cross a layer boundary.
    """

    def __init__(self, layers: Sequence[FFLayer], *, eps: float = 1e-8) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.eps = eps

    @classmethod
    def dense(cls, in_features: int, hidden: Sequence[int], *, goodness: str = "ssq",
              threshold: float | None = None, peer_norm: float = 0.0, block_size: int = 0) -> FFNet:
        sizes = [in_features, *hidden]
        return cls([FFDense(sizes[i], sizes[i + 1], goodness=goodness, threshold=threshold,
                            peer_norm=peer_norm, block_size=block_size) for i in range(len(hidden))])

    @property
    def widths(self) -> list[int]:
        return [layer.num_units for layer in self.layers]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, in) -> [h_1 (B, D_1), ..., h_L (B, D_L)], activities before normalization."""
        hs = []
        x = normalize(x, self.eps)
        for layer in self.layers:
            h = layer(x.detach())  # detach: each layer's objective is its own (paper section 2)
            hs.append(h)
            x = normalize(h, self.eps)
        return hs

    def goodness(self, hs: list[torch.Tensor], layers: Sequence[int]) -> torch.Tensor:
        """Goodness summed over the chosen layers: (B,). (Paper section 3.3, per-label test.)"""
        return sum(self.layers[i].goodness(hs[i].float()) for i in layers)

    def features(self, hs: list[torch.Tensor], layers: Sequence[int]) -> torch.Tensor:
        """Normalized activities of the chosen layers, concatenated and detached: (B, sum D)."""
        return torch.cat([normalize(hs[i].float(), self.eps) for i in layers], dim=-1).detach()

    def local_losses(self, hs_pos: list[torch.Tensor], hs_neg: list[torch.Tensor]) -> list[torch.Tensor]:
        return [layer.local_loss(hp, hn) for layer, hp, hn in zip(self.layers, hs_pos, hs_neg)]


class SoftmaxHead(nn.Module):
    """Linear softmax classifier on detached normalized FF activities (paper section 3.3).

    Starts at zero (uniform prediction) so its first updates do not depend on the seed.
    """

    def __init__(self, in_features: int, num_classes: int = 10) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, num_classes)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features.detach())  # no gradient may reach the FF layers


def mlp(in_features: int, hidden: Sequence[int], num_classes: int = 10) -> nn.Sequential:
    """Permutation-invariant ReLU MLP for the backprop baseline (paper section 3.1)."""
    sizes = [in_features, *hidden]
    mods: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        mods += [nn.Linear(a, b), nn.ReLU()]
    mods.append(nn.Linear(sizes[-1], num_classes))
    return nn.Sequential(*mods)


class CNN(nn.Module):
    """A small CNN for the backprop baseline (paper section 3.1; its MNIST error is in RESULTS.md)."""

    def __init__(self, num_classes: int = 10, *, channels: tuple[int, int] = (32, 64),
                 hidden: int = 256, dropout: float = 0.25) -> None:
        super().__init__()
        c1, c2 = channels
        self.conv1 = nn.Conv2d(1, c1, 5, padding=2)
        self.conv2 = nn.Conv2d(c1, c2, 5, padding=2)
        self.fc1 = nn.Linear(c2 * 7 * 7, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(-1, 1, 28, 28)
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # (B, c1, 14, 14)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # (B, c2, 7, 7)
        x = self.dropout(F.relu(self.fc1(x.flatten(1))))
        return self.fc2(x)
