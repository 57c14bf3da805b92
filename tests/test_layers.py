import torch

from fflab.layers import FFDense, normalize
from fflab.nets import FFNet, SoftmaxHead


def test_normalize_removes_length():
    x = torch.randn(5, 30)
    assert torch.allclose(normalize(x), normalize(7.3 * x), atol=1e-6)
    assert torch.allclose(normalize(x).square().mean(-1), torch.ones(5), atol=1e-5)


def test_next_layer_blind_to_previous_goodness():
    # Scaling layer 1's activities (its goodness) must not change what layer 2 sees.
    torch.manual_seed(0)
    net = FFNet.dense(20, [16, 8])
    x = torch.rand(4, 20)
    hs = net(x)
    h2_scaled = net.layers[1](normalize(hs[0] * 10.0))
    assert torch.allclose(hs[1], h2_scaled, atol=1e-5)


def test_no_gradient_crosses_layers():
    torch.manual_seed(0)
    net = FFNet.dense(20, [16, 12, 8])
    x = torch.rand(6, 20)
    hs = net(x)
    # Loss of the top layer only: no lower layer may receive a gradient.
    net.layers[2].local_loss(hs[2][:3], hs[2][3:]).backward()
    assert net.layers[2].weight.grad is not None and net.layers[2].weight.grad.abs().sum() > 0
    assert net.layers[0].weight.grad is None and net.layers[1].weight.grad is None
    # And each layer's loss moves exactly its own weights when all are summed.
    net.zero_grad(set_to_none=True)
    hs = net(x)
    sum(net.local_losses([h[:3] for h in hs], [h[3:] for h in hs])).backward()
    grads_all = [layer.weight.grad.clone() for layer in net.layers]
    for i in range(3):
        net.zero_grad(set_to_none=True)
        hs = net(x)
        net.layers[i].local_loss(hs[i][:3], hs[i][3:]).backward()
        assert torch.allclose(net.layers[i].weight.grad, grads_all[i], atol=1e-6)


def test_head_gets_no_gradient_into_ff_layers():
    torch.manual_seed(0)
    net = FFNet.dense(20, [16, 8])
    head = SoftmaxHead(8)
    hs = net(torch.rand(3, 20))
    head(net.features(hs, [1])).sum().backward()
    assert all(p.grad is None for p in net.parameters())
    assert head.linear.weight.grad is not None


def test_peer_norm_buffer_and_gradient():
    torch.manual_seed(0)
    layer = FFDense(10, 6, peer_norm=0.03)
    layer.peer_mean.copy_(torch.tensor([0.0, 1.0, 0.5, 0.5, 0.5, 0.5]))
    h = layer(torch.rand(4, 10))
    before = layer.peer_mean.clone()
    layer.local_loss(h, h.detach()).backward()
    assert not torch.equal(before, layer.peer_mean)  # running mean updated in training mode
    layer.eval()
    frozen = layer.peer_mean.clone()
    layer.local_loss(layer(torch.rand(4, 10)), layer(torch.rand(4, 10)))
    assert torch.equal(frozen, layer.peer_mean)


def test_block_goodness_shape_and_threshold():
    layer = FFDense(10, 8, block_size=2)
    assert layer.threshold == 2.0
    h = layer(torch.rand(3, 10))
    assert layer.block_goodness(h).shape == (3, 4)
    assert torch.allclose(layer.block_goodness(h).sum(1), layer.goodness(h))
