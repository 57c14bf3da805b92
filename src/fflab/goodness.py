"""Goodness functions and the FF loss (paper section 2; SPEC section 1).

A goodness function maps a layer's pre-normalization activities ``h`` of shape (B, D) to one
number per case, shape (B,). The probability that a case is positive is
``p = sigmoid(goodness - threshold)`` and the layer's loss is ``-log p`` on positive cases and
``-log(1 - p)`` on negative cases. Both are written with softplus so they stay finite for any
goodness (``log(1 + exp(100))`` overflows; ``softplus(100)`` does not).

"min ssq" (paper section 5) is the negated sum of squares with a negated threshold, so that
``p = sigmoid(theta - sum h^2)``: positive data should have LOW activity. Writing it as a
goodness function keeps one loss formula for both signs.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

GoodnessFn = Callable[[torch.Tensor], torch.Tensor]


def sum_of_squares(h: torch.Tensor) -> torch.Tensor:
    """``sum_j h_j^2``: (B, D) -> (B,). The paper's goodness ("max ssq")."""
    return h.square().sum(-1)


def min_sum_of_squares(h: torch.Tensor) -> torch.Tensor:
    """``-sum_j h_j^2``: (B, D) -> (B,). The paper's "min ssq" (pair it with a negative threshold)."""
    return -h.square().sum(-1)


def mean_of_squares(h: torch.Tensor) -> torch.Tensor:
    """``mean_j h_j^2``: (B, D) -> (B,). Threshold 1 here equals threshold D for sum of squares."""
    return h.square().mean(-1)


GOODNESS: dict[str, GoodnessFn] = {
    "ssq": sum_of_squares,
    "min_ssq": min_sum_of_squares,
    "mean_ssq": mean_of_squares,
}


def get_goodness(name: str) -> GoodnessFn:
    try:
        return GOODNESS[name]
    except KeyError:
        raise ValueError(f"unknown goodness {name!r}; choose one of {sorted(GOODNESS)}") from None


def default_threshold(name: str, num_units: int) -> float:
    """Threshold used by the official code: mean square activity 1 per unit.

    ssq -> D, mean_ssq -> 1, min_ssq -> -D (so that p = sigmoid(D - sum h^2)).
    """
    if name == "ssq":
        return float(num_units)
    if name == "min_ssq":
        return -float(num_units)
    if name == "mean_ssq":
        return 1.0
    get_goodness(name)  # raises the standard error for unknown names
    raise AssertionError(name)


def p_positive(goodness: torch.Tensor, threshold: float) -> torch.Tensor:
    """Probability that each case is positive: ``sigmoid(goodness - threshold)``."""
    return torch.sigmoid(goodness - threshold)


def ff_loss(g_pos: torch.Tensor, g_neg: torch.Tensor, threshold: float) -> torch.Tensor:
    """Mean FF loss over a batch of positive and a batch of negative cases.

    ``-log sigmoid(g_pos - t) = softplus(t - g_pos)`` and
    ``-log(1 - sigmoid(g_neg - t)) = softplus(g_neg - t)``.
    Either batch may be empty (returns the other term alone).
    """
    loss = g_pos.new_zeros(())
    if g_pos.numel():
        loss = loss + F.softplus(threshold - g_pos).mean()
    if g_neg.numel():
        loss = loss + F.softplus(g_neg - threshold).mean()
    return loss
