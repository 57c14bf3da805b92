"""products.linear: the forward product through oneDNN where it runs, the same numbers as addmm."""
import pytest
import torch

from fflab._engines import products
from fflab._engines.products import linear


def _operands(dtype, bias=True):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 13, generator=g).to(dtype)
    w = (torch.randn(5, 13, generator=g) / 13 ** 0.5).to(dtype)
    b = torch.randn(5, generator=g).to(dtype) if bias else None
    return x, w, b


@pytest.fixture(autouse=True)
def _small_products_too(monkeypatch):
    """The tests' tiny products take the oneDNN path (by default it starts at 4 M multiply-adds)."""
    monkeypatch.setattr(products, "MIN_ONEDNN_MACS", 0)


def _count_addmm(monkeypatch):
    calls = []
    real = torch.addmm
    monkeypatch.setattr(torch, "addmm", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def _reference(x, w, b, relu):
    z = x.double() @ w.double().t() + (0 if b is None else b.double())
    return z.relu() if relu else z


TOL = {torch.float32: 1e-5, torch.bfloat16: 3e-2, torch.float64: 1e-12}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_linear_is_x_wt_plus_b(dtype, relu, bias):
    x, w, b = _operands(dtype, bias)
    out = linear(x, w, b, relu=relu)
    assert out.shape == (7, 5) and out.dtype == dtype and out.is_contiguous()
    torch.testing.assert_close(out.double(), _reference(x, w, b, relu), rtol=TOL[dtype], atol=TOL[dtype])
    if relu:
        assert (out >= 0).all() and (out == 0).any()   # the ReLU really ran: some units are off


def test_oneDNN_and_addmm_paths_agree(monkeypatch):
    """Both branches run here (``use_onednn(False)`` forces addmm) and give the same fp32 numbers."""
    x, w, b = _operands(torch.float32)
    fast = linear(x, w, b, relu=True)
    calls = _count_addmm(monkeypatch)
    with products.use_onednn(False):
        plain = linear(x, w, b, relu=True)
    assert calls == [1]                        # the context manager took the addmm path
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-6)
    assert products.onednn_active() == products.ONEDNN_AVAILABLE   # and restored it after


def test_torch_flag_turns_oneDNN_off(monkeypatch):
    """``torch.backends.mkldnn.enabled = False`` is honoured: the product goes through addmm."""
    if not products.ONEDNN_AVAILABLE:
        pytest.skip("this torch build has no oneDNN linear")
    calls = _count_addmm(monkeypatch)
    x, w, b = _operands(torch.float32)
    linear(x, w, b)
    assert calls == []
    with torch.backends.mkldnn.flags(enabled=False):
        linear(x, w, b)
    assert calls == [1]


def test_small_products_stay_with_addmm(monkeypatch):
    """oneDNN's fixed cost per call loses on small products: under ``MIN_ONEDNN_MACS`` it is addmm."""
    calls = _count_addmm(monkeypatch)
    x, w, b = _operands(torch.float32)              # 7 x 13 x 5 multiply-adds
    monkeypatch.setattr(products, "MIN_ONEDNN_MACS", 7 * 13 * 5 + 1)
    linear(x, w, b)
    assert calls == [1]
    monkeypatch.setattr(products, "MIN_ONEDNN_MACS", 7 * 13 * 5)
    linear(x, w, b)
    assert calls == [1]


def test_bf16_without_native_support_goes_through_addmm(monkeypatch):
    """A CPU without native bf16 (AVX2 only, e.g. Zen 3): oneDNN cannot build a bf16 linear
    there, so bf16 products take addmm (slow but right) and fp32 keeps oneDNN."""
    monkeypatch.setattr(products, "NATIVE_BF16", False)
    calls = _count_addmm(monkeypatch)
    x, w, b = _operands(torch.bfloat16)
    out = linear(x, w, b, relu=True)
    assert calls == [1]
    torch.testing.assert_close(out.double(), _reference(x, w, b, True), rtol=3e-2, atol=3e-2)
    linear(*_operands(torch.float32), relu=True)
    assert calls == ([1] if products.ONEDNN_AVAILABLE else [1, 1])


@pytest.mark.needs_cxx_compiler
def test_linear_compiles_without_graph_breaks():
    """Inside ``torch.compile`` (where inductor's own oneDNN lowering wants a frozen weight) the
    product is an opaque op: one graph, and the weights may change between calls."""
    x, w, b = _operands(torch.float32)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(lambda x, w, b: linear(x, w, b, relu=True).sum(1))(x, w, b)
    assert explained.graph_break_count == 0
    fn = torch.compile(lambda x, w, b: linear(x, w, b, relu=True), dynamic=False)
    torch.testing.assert_close(fn(x, w, b), linear(x, w, b, relu=True))
    w2 = w * 2
    torch.testing.assert_close(fn(x, w2, b), linear(x, w2, b, relu=True))


@pytest.mark.needs_cxx_compiler
def test_compiled_linear_without_custom_op_falls_back_to_addmm(monkeypatch):
    """torch without ``torch.library.custom_op`` (< 2.4): compiled code takes addmm, never the
    oneDNN kernel, whose inductor lowering fails on a weight that is not a frozen constant."""
    monkeypatch.setattr(products, "_OPAQUE_LINEAR", None)
    x, w, b = _operands(torch.float32)
    torch._dynamo.reset()
    fn = torch.compile(lambda x, w, b: linear(x, w, b, relu=True), dynamic=False)
    torch.testing.assert_close(fn(x, w, b), linear(x, w, b, relu=True))


def test_differentiable_where_autograd_records_it():
    """oneDNN's kernel has no derivative: with inputs that need gradients (and grad mode on),
    ``linear`` is addmm, and backward gives the gradients of x @ w.T + b."""
    x, w, b = (t.requires_grad_() for t in _operands(torch.float32))
    linear(x, w, b, relu=True).square().sum().backward()
    xr, wr, br = (t.detach().double().requires_grad_() for t in (x, w, b))
    _reference(xr, wr, br, True).square().sum().backward()
    for got, ref in ((x, xr), (w, wr), (b, br)):
        assert got.grad is not None
        torch.testing.assert_close(got.grad.double(), ref.grad, rtol=1e-5, atol=1e-5)


def test_analytic_update_through_oneDNN_equals_autograd(monkeypatch):
    """The engine end to end with every forward product on the oneDNN path (fp32, tiny net):
    the same FF gradients as autograd through the plain modules."""
    from fflab._engines.dense import ff_backward
    from fflab.nets import FFNet
    calls = _count_addmm(monkeypatch)
    torch.manual_seed(0)
    net = FFNet.dense(30, [16, 12, 8], threshold=None, goodness="ssq")
    x_pn = torch.rand(10, 30)
    hs = net(x_pn)
    torch.stack(net.local_losses([h[:6] for h in hs], [h[6:] for h in hs])).sum().backward()
    ref = [p.grad.clone() for p in net.parameters()]
    net.zero_grad(set_to_none=True)
    ff_backward(net, x_pn, 6)
    if products.ONEDNN_AVAILABLE:
        assert calls == []   # no forward product went through addmm
    for p, g in zip(net.parameters(), ref):
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-6)


def test_native_bf16_follows_the_cpu_flag(monkeypatch):
    """dtype=auto's question: the CPU's answer is products.NATIVE_BF16; other devices say no
    unless they are a bf16 GPU."""
    for flag in (False, True):
        monkeypatch.setattr(products, "NATIVE_BF16", flag)
        assert products.native_bf16(torch.device("cpu")) is flag
    assert products.native_bf16(torch.device("meta")) is False
