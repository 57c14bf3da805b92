"""Section 8 (learning fast): one step gives every layer goodness S* for x, without changing any
layer's normalized output for x, so all layers can be updated at once. Checked in float64."""
import copy

import pytest
import torch
from torch import nn

from fflab.fast import fast_deltas, fast_update, forward, l2_normalize, layer_goodness, online_fast_learning_demo
from fflab.layers import FFDense

SIZES = (20, 16, 12, 8)
TOL = dict(rtol=1e-10, atol=1e-12)


def make_stack(seed=0, bias=True):
    g = torch.Generator().manual_seed(seed)
    layers = []
    for d_in, d_out in zip(SIZES[:-1], SIZES[1:]):
        if bias:
            layer = FFDense(d_in, d_out).double()
        else:
            layer = nn.Linear(d_in, d_out, bias=False).double()
        with torch.no_grad():
            layer.weight.copy_(torch.randn(d_out, d_in, generator=g, dtype=torch.float64) / d_in ** 0.5)
            if bias:  # non-zero biases so the bias handling is exercised
                layer.bias.copy_(0.1 * torch.randn(d_out, generator=g, dtype=torch.float64))
        layers.append(layer)
    x = torch.randn(SIZES[0], generator=g, dtype=torch.float64)
    return layers, x


def naive_forward(layers, x):
    """Reference: plain loops, L2 normalization written out."""
    h, outs = x, []
    for layer in layers:
        h = h / torch.sqrt((h * h).sum())
        z = layer.weight @ h + (layer.bias if layer.bias is not None else 0)
        h = torch.clamp(z, min=0)
        outs.append(h)
    return outs


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("s_star", [0.05, 3.0])  # below and above the current goodness
def test_every_layer_reaches_s_star_and_orientation_is_unchanged(bias, s_star):
    layers, x = make_stack(bias=bias)
    before = naive_forward(layers, x)
    eps = fast_update(layers, x, s_star)
    after = naive_forward(layers, x)
    for y0, y1, e in zip(before, after, eps):
        # (ii) exact goodness S*
        torch.testing.assert_close(y1.square().sum(), torch.tensor(s_star, dtype=torch.float64), **TOL)
        # (i) the normalized output is unchanged: y' = (1 + eps) y
        torch.testing.assert_close(l2_normalize(y1), l2_normalize(y0), **TOL)
        torch.testing.assert_close(y1, (1 + e) * y0, **TOL)
        # inactive units stay exactly inactive
        assert torch.equal(y1 == 0, y0 == 0)


def test_eps_is_the_papers_formula_and_the_paper_learning_rate_without_bias():
    layers, x = make_stack(bias=False)
    ys = naive_forward(layers, x)
    eps, deltas = fast_deltas(layers, x, 2.0)
    inputs, _ = forward(layers, x)
    for y, e, x_l, (d_w, d_b) in zip(ys, eps, inputs, deltas):
        torch.testing.assert_close(e, torch.sqrt(2.0 / y.square().sum()) - 1, **TOL)
        # |x_L| = 1 and no bias: the step is exactly eps * y x^T, the paper's learning rate
        torch.testing.assert_close(d_w, e * torch.outer(y, x_l[0]), **TOL)
        assert d_b is None


def test_update_is_along_the_goodness_gradient():
    """dW is parallel to d(sum y^2)/dW = 2 y x^T (autograd reference), db to 2 y."""
    layers, x = make_stack()
    eps, deltas = fast_deltas(layers, x, 5.0)
    inputs, _ = forward(layers, x)
    for layer, x_l, (d_w, d_b), e in zip(layers, inputs, deltas, eps):
        layer.zero_grad()
        x_l = x_l.detach()
        torch.relu(nn.functional.linear(x_l, layer.weight, layer.bias)).square().sum().backward()
        input_sq = x_l.square().sum() + 1  # bias acts as an input fixed at 1
        torch.testing.assert_close(d_w, e / input_sq * layer.weight.grad / 2, **TOL)
        torch.testing.assert_close(d_b, e / input_sq * layer.bias.grad / 2, **TOL)


def test_simultaneous_equals_sequential():
    """(iii) All eps from the pre-update pass, all layers updated at once == one layer at a time,
    each from a fresh forward pass through the already-updated layers below."""
    layers, x = make_stack(seed=1)
    seq = copy.deepcopy(layers)
    eps_all = fast_update(layers, x, 1.5)
    eps_seq = []
    for index in range(len(seq)):
        eps, deltas = fast_deltas(seq, x, 1.5)  # fresh pass, lower layers already updated
        eps_seq.append(eps[index])
        d_w, d_b = deltas[index]
        with torch.no_grad():
            seq[index].weight.add_(d_w)
            seq[index].bias.add_(d_b)
    torch.testing.assert_close(eps_all, torch.stack(eps_seq), **TOL)
    for a, b in zip(layers, seq):
        torch.testing.assert_close(a.weight, b.weight, **TOL)
        torch.testing.assert_close(a.bias, b.bias, **TOL)
    torch.testing.assert_close(layer_goodness(layers, x)[0], torch.full((3,), 1.5, dtype=torch.float64), **TOL)


def test_deltas_are_pure_and_per_layer_targets():
    layers, x = make_stack()
    w0 = [layer.weight.clone() for layer in layers]
    fast_deltas(layers, x, 1.0)
    assert all(torch.equal(a, layer.weight) for a, layer in zip(w0, layers))
    targets = [0.5, 1.0, 2.0]
    fast_update(layers, x, targets)
    torch.testing.assert_close(layer_goodness(layers, x)[0], torch.tensor(targets, dtype=torch.float64), **TOL)


def test_rms_normalization_is_exact_too():
    layers, x = make_stack()
    fast_update(layers, x, 4.0, norm="rms")
    torch.testing.assert_close(layer_goodness(layers, x, norm="rms")[0],
                               torch.full((3,), 4.0, dtype=torch.float64), **TOL)


def test_errors():
    layers, x = make_stack()
    with pytest.raises(ValueError, match="one case at a time"):
        fast_deltas(layers, torch.stack([x, x]), 1.0)
    with pytest.raises(ValueError, match="3 layers"):
        fast_deltas(layers, x, [1.0, 2.0])
    with pytest.raises(ValueError, match="positive"):
        fast_deltas(layers, x, 0.0)
    with pytest.raises(ValueError, match="unknown norm"):
        fast_deltas(layers, x, 1.0, norm="layer")
    with torch.no_grad():
        layers[1].weight.zero_()
        layers[1].bias.fill_(-1.0)
    with pytest.raises(ValueError, match="layer 1 has no active unit"):
        fast_deltas(layers, x, 1.0)


def test_online_demo():
    layers, _ = make_stack()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, SIZES[0], generator=g, dtype=torch.float64)
    out = online_fast_learning_demo(layers, x[:4], x[4:], 2.0)
    assert out["g_seen_before"].shape == (4, 3) and out["g_unseen"].shape == (2, 3)
    assert out["eps"].shape == (4, 3)
    torch.testing.assert_close(out["g_seen_own_step"], torch.full((4, 3), 2.0, dtype=torch.float64), **TOL)
    # the last case learned has seen no later step
    torch.testing.assert_close(out["g_seen"][-1], torch.full((3,), 2.0, dtype=torch.float64), **TOL)
