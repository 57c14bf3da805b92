import math

import pytest
import torch

from fflab.objective import (
    default_threshold,
    ff_loss,
    get_goodness,
    mean_of_squares,
    min_sum_of_squares,
    p_positive,
    sum_of_squares,
)


def naive_loss(g_pos, g_neg, t):
    # -log p on positives, -log(1 - p) on negatives, p = 1 / (1 + exp(-(g - t)))
    lp = [-math.log(1 / (1 + math.exp(-(g - t)))) for g in g_pos]
    ln = [-math.log(1 - 1 / (1 + math.exp(-(g - t)))) for g in g_neg]
    return sum(lp) / len(lp) + sum(ln) / len(ln)


def test_loss_matches_naive_formula():
    g_pos = torch.tensor([3.0, 5.5, 0.2, 9.0], dtype=torch.float64)
    g_neg = torch.tensor([1.0, 4.0, 7.5], dtype=torch.float64)
    got = ff_loss(g_pos, g_neg, 4.0).item()
    assert got == pytest.approx(naive_loss(g_pos.tolist(), g_neg.tolist(), 4.0), rel=1e-12)


def test_loss_finite_at_large_goodness():
    g = torch.tensor([1e4, -1e4, 1e6])
    loss = ff_loss(g, g, 0.0)
    assert torch.isfinite(loss)
    # confident correct positives cost ~0, confident wrong negatives cost ~g
    assert ff_loss(torch.tensor([1e4]), torch.tensor([-1e4]), 0.0).item() == pytest.approx(0.0, abs=1e-6)
    assert ff_loss(torch.tensor([]), torch.tensor([100.0]), 0.0).item() == pytest.approx(100.0)
    g.requires_grad_(True)
    ff_loss(g, g.detach(), 0.0).backward()
    assert torch.isfinite(g.grad).all()


def test_goodness_functions():
    h = torch.tensor([[1.0, 2.0, 0.0, 3.0]])
    assert sum_of_squares(h).item() == 14.0
    assert min_sum_of_squares(h).item() == -14.0
    assert mean_of_squares(h).item() == 3.5
    assert default_threshold("ssq", 4) == 4.0 and default_threshold("min_ssq", 4) == -4.0
    assert default_threshold("mean_ssq", 4) == 1.0
    # min ssq: low activity means positive
    assert p_positive(min_sum_of_squares(torch.zeros(1, 4)), -4.0).item() > 0.98
    with pytest.raises(ValueError, match="unknown goodness"):
        get_goodness("nope")
