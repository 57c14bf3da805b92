"""Tests for the locally connected FF layer (paper sections 3.2 and 4): against a naive loop."""
import pytest
import torch

from fflab.layers import FFDense, normalize
from fflab.local import MNIST_LOCAL_LAYERS, FFLocal, local_stack


def naive_local(layer: FFLocal, x: torch.Tensor) -> torch.Tensor:
    """Reference: every unit computed from its own patch with explicit loops over locations."""
    c, h, w = layer.in_shape
    u_n, h_out, w_out = layer.out_shape
    p, s, pad = layer.patch, layer.stride, layer.padding
    img = x.reshape(-1, c, h, w)
    padded = torch.zeros(img.shape[0], c, h + 2 * pad, w + 2 * pad, dtype=x.dtype)
    padded[:, :, pad:pad + h, pad:pad + w] = img
    out = torch.zeros(img.shape[0], u_n, h_out, w_out, dtype=x.dtype)
    for i in range(h_out):
        for j in range(w_out):
            loc = i * w_out + j
            patch = padded[:, :, i * s:i * s + p, j * s:j * s + p].reshape(img.shape[0], -1)  # (B, K)
            for u in range(u_n):
                out[:, u, i, j] = torch.relu(patch @ layer.weight[loc, :, u] + layer.bias[loc, u])
    return out.reshape(img.shape[0], -1)   # channel-major (U, H_out, W_out)


@pytest.mark.parametrize("impl", ["dense", "bmm"])
@pytest.mark.parametrize("in_shape,patch,stride,padding", [
    ((1, 6, 6), 3, 1, 0), ((1, 6, 6), 3, 2, 1), ((2, 7, 5), 3, 2, 1), ((3, 6, 6), 4, 1, 2),
])
def test_matches_naive_reference(in_shape, patch, stride, padding, impl):
    torch.manual_seed(0)
    layer = FFLocal(in_shape, 2, patch, stride=stride, padding=padding, impl=impl).double()
    with torch.no_grad():
        layer.bias.normal_()   # nonzero bias so the test sees it
    x = torch.randn(4, *in_shape, dtype=torch.float64)
    h = layer(x.flatten(1))
    assert h.shape == (4, layer.num_units)
    torch.testing.assert_close(h, naive_local(layer, x), atol=1e-6, rtol=0)
    torch.testing.assert_close(layer(x), h, atol=0, rtol=0)   # (B, C, H, W) input too
    assert (h > 0).any() and (h == 0).any()


def test_geometry_shapes_and_init():
    layer = FFLocal((1, 28, 28), 10, 11, stride=2, padding=5, generator=torch.Generator().manual_seed(0))
    assert layer.out_shape == (10, 14, 14) and layer.num_units == 1960
    assert layer.weight.shape == (196, 121, 10) and layer.bias.shape == (196, 10)
    assert abs(layer.weight.var().item() * 121 - 1) < 0.05         # N(0, 1/K)
    assert layer.threshold == 1960.0                                # ssq default: num_units
    assert FFLocal.geometry((3, 32, 32), 11, padding=5) == (32, 32)  # CIFAR maps of the paper
    with pytest.raises(ValueError):
        FFLocal((1, 4, 4), 2, 5)
    with pytest.raises(ValueError):
        layer(torch.randn(2, 783))
    same = FFLocal((1, 28, 28), 10, 11, stride=2, padding=5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(same.weight, layer.weight)


def test_equivalent_dense_layer():
    # A local layer whose patch covers the whole input is a dense layer (one location).
    dense = FFDense(12, 5).double()
    local = FFLocal((3, 2, 2), 5, 2).double()
    with torch.no_grad():
        local.weight.copy_(dense.weight.T.unsqueeze(0))
        local.bias.copy_(dense.bias.unsqueeze(0) + 0.1)
        dense.bias.add_(0.1)
    x = torch.randn(6, 12, dtype=torch.float64)
    torch.testing.assert_close(local(x), dense(x))


def test_gradients_only_to_own_parameters():
    lower, upper = local_stack((1, 8, 8), (dict(units_per_location=3, patch=3, stride=1, padding=1),
                                           dict(units_per_location=2, patch=3, stride=2, padding=0)))
    x_pos, x_neg = torch.rand(5, 64), torch.rand(5, 64)
    h_pos, h_neg = lower(x_pos), lower(x_neg)
    # The upper layer gets the normalized, detached output: its loss must not reach `lower`.
    u_pos, u_neg = upper(normalize(h_pos).detach()), upper(normalize(h_neg).detach())
    upper.local_loss(u_pos, u_neg).backward()
    assert lower.weight.grad is None and lower.bias.grad is None
    assert upper.weight.grad is not None and upper.weight.grad.abs().sum() > 0
    assert upper.bias.grad is not None


@pytest.mark.parametrize("impl", ["dense", "bmm"])
def test_weight_gradient_matches_naive(impl):
    torch.manual_seed(1)
    layer = FFLocal((2, 5, 5), 2, 3, stride=2, padding=1, impl=impl).double()
    x_pos = torch.randn(3, 50, dtype=torch.float64)
    x_neg = torch.randn(3, 50, dtype=torch.float64)
    layer.local_loss(layer(x_pos), layer(x_neg)).backward()
    g_fast = layer.weight.grad.clone()
    layer.weight.grad = None
    layer.local_loss(naive_local(layer, x_pos), naive_local(layer, x_neg)).backward()
    torch.testing.assert_close(g_fast, layer.weight.grad)
    assert g_fast.abs().sum() > 0


def test_dense_and_bmm_paths_agree_and_share_state_dicts():
    torch.manual_seed(2)
    dense = FFLocal((1, 28, 28), 10, 11, stride=2, padding=5, impl="dense")
    bmm = FFLocal((1, 28, 28), 10, 11, stride=2, padding=5, impl="bmm")
    bmm.load_state_dict(dense.state_dict())   # same parameters, no index buffers in the state dict
    assert set(dense.state_dict()) == set(bmm.state_dict())
    x = torch.rand(6, 784)
    torch.testing.assert_close(dense(x), bmm(x), atol=1e-5, rtol=1e-5)
    for layer in (dense, bmm):
        layer(x).square().sum().backward()
    torch.testing.assert_close(dense.weight.grad, bmm.weight.grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(dense.bias.grad, bmm.bias.grad, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="impl"):
        FFLocal((1, 6, 6), 2, 3, impl="conv")


def test_local_loss_and_peer_normalization():
    layer = FFLocal((1, 6, 6), 2, 3, stride=1, peer_norm=0.03)
    assert layer.peer_mean.shape == (layer.num_units,)
    before = layer.peer_mean.clone()
    h_pos, h_neg = layer(torch.rand(8, 36)), layer(torch.rand(8, 36))
    loss = layer.local_loss(h_pos, h_neg)
    assert loss.ndim == 0 and torch.isfinite(loss)
    expected = 0.9 * before + 0.1 * h_pos.detach().mean(0)
    torch.testing.assert_close(layer.peer_mean, expected)
    loss.backward()
    assert layer.weight.grad is not None
    layer.eval()
    frozen = layer.peer_mean.clone()
    layer.local_loss(layer(torch.rand(8, 36)), h_neg.detach())
    assert torch.equal(layer.peer_mean, frozen)


def test_min_ssq_threshold():
    layer = FFLocal((1, 6, 6), 2, 3, goodness="min_ssq")
    assert layer.threshold == -layer.num_units


def test_stack_of_local_layers_reads_maps():
    stack = local_stack((1, 28, 28))
    assert [l.out_shape for l in stack] == [(10, 14, 14)] * 4
    assert all(l.num_units == 1960 for l in stack)
    assert len(stack) == len(MNIST_LOCAL_LAYERS)
    x = torch.rand(64, 784)
    with torch.no_grad():
        for layer in stack:
            h = layer(x)
            assert h.shape == (64, 1960) and torch.isfinite(h).all()
            x = normalize(h)
    # Channel-major output: the flat vector reshapes to (U, H_out, W_out), and reading it as an
    # image is what the next layer does.
    layer = stack[1]
    h0 = stack[0](torch.rand(2, 784))
    torch.testing.assert_close(layer(h0), layer(h0.view(2, *stack[0].out_shape)))


def test_speed_sanity_2000_units():
    # No Python loop over positions: a (64, 784) forward through a 1960-unit layer and a
    # 2352-unit CIFAR-like layer is a handful of tensor ops (not timed; runs in milliseconds).
    with torch.no_grad():
        h = FFLocal((1, 28, 28), 10, 11, stride=2, padding=5)(torch.rand(64, 784))
        h2 = FFLocal((1, 28, 28), 3, 11, stride=1, padding=5)(torch.rand(64, 784))
    assert h.shape == (64, 1960) and h2.shape == (64, 2352)
