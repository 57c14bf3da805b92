import pytest
import torch

from fflab._engines.dense import ff_backward, supports
from fflab.nets import FFNet


def autograd_grads(net, x_pn, b):
    net.zero_grad(set_to_none=True)
    hs = net(x_pn)
    loss = torch.stack(net.local_losses([h[:b] for h in hs], [h[b:] for h in hs])).sum()
    loss.backward()
    return loss.detach(), [(l.weight.grad.clone(), l.bias.grad.clone()) for l in net.layers]


NETS = [dict(goodness="ssq"), dict(goodness="min_ssq"), dict(goodness="mean_ssq"),
        dict(goodness="ssq", block_size=4), dict(goodness="ssq", peer_norm=0.03)]


@pytest.mark.parametrize("kw", NETS)
def test_analytic_equals_autograd(kw):
    torch.manual_seed(0)
    net = FFNet.dense(30, [16, 12, 8], threshold=None, **kw).double()
    x_pn = torch.rand(10, 30, dtype=torch.float64)
    peer0 = [l.peer_mean.clone() for l in net.layers]
    loss_ref, ref = autograd_grads(net, x_pn, 6)
    for l, p in zip(net.layers, peer0):
        l.peer_mean.copy_(p)  # the peer-mean update must see the same starting point
    net.zero_grad(set_to_none=True)
    loss, _ = ff_backward(net, x_pn, 6)
    assert supports(net)
    assert loss.item() == pytest.approx(loss_ref.item(), rel=1e-9)
    for layer, (gw, gb) in zip(net.layers, ref):
        assert torch.allclose(layer.weight.grad.double(), gw, rtol=1e-6, atol=1e-9)
        assert torch.allclose(layer.bias.grad.double(), gb, rtol=1e-6, atol=1e-9)


def test_analytic_bf16_close_to_fp32():
    torch.manual_seed(0)
    net = FFNet.dense(64, [32, 32], goodness="mean_ssq")
    x_pn = torch.rand(16, 64)
    ff_backward(net, x_pn, 8)
    g32 = [l.weight.grad.clone() for l in net.layers]
    ff_backward(net, x_pn, 8, dtype=torch.bfloat16)
    for layer, g in zip(net.layers, g32):
        assert layer.weight.grad.dtype == torch.float32
        rel = (layer.weight.grad - g).norm() / g.norm()
        assert rel < 0.05


@pytest.mark.parametrize("kw", [*NETS, dict(goodness="mean_ssq", block_size=4, peer_norm=0.03)])
def test_shared_label_input_equals_plain_path(kw):
    """The shared engine (engine=auto's choice for every net this test builds) makes the analytic
    engine's gradients, for every goodness, block goodness and peer normalization."""
    from fflab._engines.dense import LabelledInput
    from fflab.negatives import overlay_label
    torch.manual_seed(0)
    net = FFNet.dense(40, [16, 12], threshold=None, **kw).double()
    x = torch.rand(6, 40, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    y_neg = torch.tensor([1, 2, 3, 4, 5, 0])
    li = LabelledInput(net, x, num_classes=10)
    for labels in (None, y):
        ref = net(overlay_label(x, labels))
        got = li.forward(labels)
        assert all(torch.allclose(a, b, atol=1e-10) for a, b in zip(ref, got))
    peer0 = [l.peer_mean.clone() for l in net.layers]
    loss_ref, _ = ff_backward(net, torch.cat([overlay_label(x, y), overlay_label(x, y_neg)]), 6)
    ref = [(l.weight.grad.clone(), l.bias.grad.clone()) for l in net.layers]
    for l, p in zip(net.layers, peer0):
        l.peer_mean.copy_(p)
    loss = li.ff_backward(y, y_neg)
    assert loss.item() == pytest.approx(loss_ref.item(), rel=1e-9)
    for layer, (gw, gb) in zip(net.layers, ref):
        assert torch.allclose(layer.weight.grad, gw, atol=1e-10)
        assert torch.allclose(layer.bias.grad, gb, atol=1e-10)


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_gradients_into_a_list_equal_the_grad_attributes(dtype):
    """``ff_backward(..., grads)`` (what update.CompiledUpdate consumes) hands out the same
    gradients as ``.grad`` (exactly), in parameter order, and leaves ``.grad`` alone."""
    import copy

    from fflab._engines.dense import LabelledInput
    torch.manual_seed(0)
    net = FFNet.dense(40, [16, 12])
    twin = copy.deepcopy(net)
    x = torch.rand(6, 40)
    y, y_neg = torch.tensor([0, 1, 2, 3, 4, 5]), torch.tensor([1, 2, 3, 4, 5, 0])
    loss_ref = LabelledInput(net, x, num_classes=10, dtype=dtype).ff_backward(y, y_neg)
    grads: list[torch.Tensor] = []
    loss = LabelledInput(twin, x, num_classes=10, dtype=dtype).ff_backward(y, y_neg, grads)
    assert loss.item() == loss_ref.item()
    assert all(p.grad is None for p in twin.parameters())
    assert len(grads) == len(list(net.parameters()))
    for i, (g, p) in enumerate(zip(grads, net.parameters())):
        # upper weight gradients as they leave their products; the first layer's (with its label
        # columns) and the biases in fp32
        expected = (dtype or torch.float32) if i >= 2 and g.dim() == 2 else torch.float32
        assert g.dtype == expected
        torch.testing.assert_close(g.float(), p.grad, rtol=0, atol=0)


def test_each_label_forward_equals_plain_per_label_pass():
    from fflab._engines.dense import LabelledInput
    from fflab.negatives import overlay_label
    torch.manual_seed(0)
    net = FFNet.dense(40, [16, 12]).double()
    x = torch.rand(5, 40, dtype=torch.float64)
    labels = torch.arange(10).repeat_interleave(5)                 # label-major, as ff_predict
    ref = net(overlay_label(x.repeat(10, 1), labels))
    got = LabelledInput(net, x, num_classes=10).forward_each_label()
    assert [h.shape for h in got] == [h.shape for h in ref]
    assert all(torch.allclose(a, b, atol=1e-10) for a, b in zip(ref, got))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_ff_predict_shared_image_product_matches_plain(dtype):
    from fflab.experiments.supervised import predict as ff_predict
    from fflab.nets import SoftmaxHead
    from fflab.runtime import Runtime
    torch.manual_seed(0)
    net = FFNet.dense(784, [64, 64, 64])
    head = SoftmaxHead(128)
    x = (torch.rand(300, 784) > 0.7).float()
    rt = Runtime(torch.device("cpu"), dtype)
    fast = ff_predict(net, head, x, layers=[1, 2], per_label=True, chunk=128, rt=rt)
    plain = ff_predict(net, head, x, layers=[1, 2], per_label=True, chunk=128, rt=rt, shared=False)
    assert torch.equal(fast["onepass"], plain["onepass"])
    # same argmax except where two labels' goodness differ by less than the rounding
    agree = (fast["goodness"] == plain["goodness"]).float().mean().item()
    assert agree == 1.0 if dtype == "float32" else agree > 0.95


@pytest.mark.needs_cxx_compiler
def test_compiled_update_equals_eager():
    """compile=true: the same gradients, loss and peer-mean update as the eager shared update
    (float rounding aside), with repeated labels among positives and negatives."""
    import copy

    from fflab._engines.dense import LabelledInput, compiled_ff_backward
    torch.manual_seed(0)
    net = FFNet.dense(40, [16, 12], peer_norm=0.03)
    twin = copy.deepcopy(net)
    x = torch.rand(6, 40)
    y, y_neg = torch.tensor([0, 0, 2, 3, 3, 5]), torch.tensor([3, 2, 0, 0, 5, 3])
    loss_ref = LabelledInput(net, x, num_classes=10).ff_backward(y, y_neg)
    loss = compiled_ff_backward(torch.device("cpu"))(LabelledInput(twin, x, num_classes=10), y, y_neg)
    assert loss.item() == pytest.approx(loss_ref.item(), rel=1e-5)
    for a, b in zip(net.layers, twin.layers):
        assert torch.allclose(a.weight.grad, b.weight.grad, rtol=1e-4, atol=1e-6)
        assert torch.allclose(a.bias.grad, b.bias.grad, rtol=1e-4, atol=1e-6)
        assert torch.allclose(a.peer_mean, b.peer_mean, rtol=1e-5)


@pytest.mark.parametrize("compiled", [False, pytest.param(True, marks=pytest.mark.needs_cxx_compiler)])
def test_neutral_head_grads_equal_autograd(compiled):
    """compile=true's neutral step (train.neutral_head_grads): the head's probabilities and the
    gradient of its mean cross-entropy, made without autograd, equal autograd's through the plain
    neutral pass; compiled, in one graph."""
    from fflab._engines.compiled import compile_static
    from fflab._engines.dense import LabelledInput
    from fflab._engines.supervised import neutral_head_grads
    from fflab.negatives import overlay_label
    from fflab.nets import SoftmaxHead
    torch.manual_seed(0)
    net = FFNet.dense(40, [16, 12, 8])
    head = SoftmaxHead(12 + 8)
    torch.nn.init.normal_(head.linear.weight)   # not the zero start: every gradient term matters
    x, y = torch.rand(6, 40), torch.tensor([0, 0, 2, 3, 3, 5])
    logits = head(net.features(net(overlay_label(x, None, 10)), [1, 2]))
    torch.nn.functional.cross_entropy(logits, y).backward()
    fn = neutral_head_grads
    if compiled:
        torch._dynamo.reset()
        fn = compile_static(neutral_head_grads, torch.device("cpu"))
    probs, gw, gb = fn(LabelledInput(net, x, num_classes=10), head, y, [1, 2])
    torch.testing.assert_close(probs, logits.detach().softmax(1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gw, head.linear.weight.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(gb, head.linear.bias.grad, rtol=1e-4, atol=1e-6)
    if compiled:
        explained = torch._dynamo.explain(neutral_head_grads)(LabelledInput(net, x, num_classes=10), head, y, [1, 2])
        assert explained.graph_break_count == 0


@pytest.mark.parametrize("compiled", [False, pytest.param(True, marks=pytest.mark.needs_cxx_compiler)])
def test_deferred_weight_gradients_are_the_same_products(compiled):
    """``defer=True`` (what update.ProductSGD consumes) hands out every weight gradient as a
    GradProduct, the first layer's with its label columns, that makes the same gradient as
    ``.grad``; biases as tensors. Repeated labels among positives and negatives."""
    import copy

    from fflab._engines.dense import LabelledInput, compiled_ff_backward
    from fflab._engines.update import GradProduct
    torch.manual_seed(0)
    net = FFNet.dense(40, [16, 12, 8])
    twin = copy.deepcopy(net)
    x = torch.rand(6, 40)
    y, y_neg = torch.tensor([0, 0, 2, 3, 3, 5]), torch.tensor([3, 2, 0, 0, 5, 3])
    loss_ref = LabelledInput(net, x, num_classes=10).ff_backward(y, y_neg)
    backward = compiled_ff_backward(torch.device("cpu")) if compiled else LabelledInput.ff_backward
    grads: list = []
    loss = backward(LabelledInput(twin, x, num_classes=10), y, y_neg, grads, True)
    assert loss.item() == pytest.approx(loss_ref.item(), rel=1e-5)
    assert all(p.grad is None for p in twin.parameters())
    assert [isinstance(g, GradProduct) for g in grads] == [True, False] * 3
    assert grads[0].cols is not None and grads[0].cols.shape == (16, 10)
    for g, p in zip(grads, net.parameters()):
        made = g.materialize() if isinstance(g, GradProduct) else g
        torch.testing.assert_close(made, p.grad, rtol=1e-4, atol=1e-6)
