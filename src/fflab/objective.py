"""The FF objective, defined once (paper section 2): goodness, threshold, the FF loss, its
derivative with respect to the activities, and peer normalization.

A goodness function maps a layer's pre-normalization ReLU activities ``h`` (B, D) to one number
per case (B,). The probability that a case is positive is ``p = sigmoid(goodness - threshold)``;
the layer's loss is ``-log p`` on positive cases and ``-log(1 - p)`` on negative cases, written
with softplus so that it stays finite for any goodness (``log(1 + exp(100))`` overflows,
``softplus(100)`` does not).

"min ssq" (paper section 5) is the negated sum of squares with a negated threshold, so that
``p = sigmoid(theta - sum h^2)``: positive data should have LOW activity. Written as a goodness
function it keeps one loss formula for both signs.

Every engine uses these functions: ``FFLayer.local_loss`` (autograd) and ``FFLayer.local_grad``
(the same loss differentiated by hand, for the engines that bypass autograd); the tests check
one against the other.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Goodness:
    """A goodness of the form ``sign * sum_j h_j^2 / n`` (n = 1, or D for a mean)."""
    name: str
    fn: GoodnessFn
    sign: float      # +1: positive data should have high activity; -1: low (min ssq)
    mean: bool       # divide by the number of units

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        return self.fn(h)

    def grad(self, h: torch.Tensor, dg: torch.Tensor) -> torch.Tensor:
        """dL/dh given dL/dG: ``dg[..., None] * sign * 2 h / n``. h (..., D), dg (...,)."""
        n = h.shape[-1] if self.mean else 1
        return h * (dg.unsqueeze(-1) * (2.0 * self.sign / n))

    def default_threshold(self, num_units: int) -> float:
        """The official code's threshold: mean square activity 1 per unit (D, -D, or 1)."""
        return 1.0 if self.mean else self.sign * float(num_units)


GOODNESS: dict[str, Goodness] = {
    "ssq": Goodness("ssq", sum_of_squares, 1.0, False),
    "min_ssq": Goodness("min_ssq", min_sum_of_squares, -1.0, False),
    "mean_ssq": Goodness("mean_ssq", mean_of_squares, 1.0, True),
}


def get_goodness(name: str) -> Goodness:
    try:
        return GOODNESS[name]
    except KeyError:
        raise ValueError(f"unknown goodness {name!r}; choose one of {sorted(GOODNESS)}") from None


def default_threshold(name: str, num_units: int) -> float:
    """ssq -> D, mean_ssq -> 1, min_ssq -> -D (so that p = sigmoid(D - sum h^2))."""
    return get_goodness(name).default_threshold(num_units)


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


def ff_loss_grad(g: torch.Tensor, num_pos: int, threshold: float) -> torch.Tensor:
    """dL/dg of ``ff_loss(g[:num_pos], g[num_pos:], threshold)`` for g (N,) or (N, blocks):
    ``-sigmoid(t - g) / count`` on positive rows, ``+sigmoid(g - t) / count`` on negative rows,
    where count is the number of entries of each half (the loss is a mean over each)."""
    dg = torch.empty_like(g)
    per_row = g[0].numel() if g.dim() > 1 else 1
    num_neg = g.shape[0] - num_pos
    if num_pos:
        dg[:num_pos] = -torch.sigmoid(threshold - g[:num_pos]) / (num_pos * per_row)
    if num_neg:
        dg[num_pos:] = torch.sigmoid(g[num_pos:] - threshold) / (num_neg * per_row)
    return dg


# ----------------------------------------------------------------------------- peer normalization
# Official code (and the paper's 1.16% model, section 3.2): keep a running mean m_j of each unit's
# positive-pass activity and push the gradient wrt unit j by ``strength * (mean_k m_k - m_j)`` in
# the direction that raises the objective, so that no unit stays always off or always on.

def peer_mean_update(peer_mean: torch.Tensor, h_pos: torch.Tensor, momentum: float,
                     batch_mean: Callable[[torch.Tensor], torch.Tensor] = lambda m: m) -> None:
    """``m <- momentum * m + (1 - momentum) * mean_batch(h_pos)``, in place (no gradient);
    ``batch_mean`` maps the batch's mean before it is used (data parallel: the mean over the
    processes' shares)."""
    with torch.no_grad():
        peer_mean.mul_(momentum).add_(batch_mean(h_pos.detach().float().mean(0)), alpha=1 - momentum)


def peer_push(peer_mean: torch.Tensor, strength: float) -> torch.Tensor:
    """The per-unit push ``c_j = strength * (mean_k m_k - m_j)``, (D,). As a loss term it is
    ``-(c * h_pos).sum(-1).mean()``; its gradient on positive case i is ``-c / B`` at active units."""
    return strength * (peer_mean.mean() - peer_mean)
