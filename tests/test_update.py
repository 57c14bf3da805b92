"""update.CompiledUpdate: torch's SGD / Adam step, compiled, from low-precision gradients;
update.ProductSGD: torch's SGD step with the weight-gradient products made into the momentum buffer."""
import copy

import pytest
import torch

from fflab._engines.update import CompiledUpdate, GradProduct, ProductSGD

OPTIMIZERS = {
    # the official EMA smoothing (dampening = momentum) with weight decay, as make_optimizer builds it
    "sgd": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, dampening=0.9, weight_decay=1e-2, fused=True),
    "adam": lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=1e-2, fused=True),
}


def _params():
    g = torch.Generator().manual_seed(0)
    return [torch.nn.Parameter(torch.randn(6, 5, generator=g)), torch.nn.Parameter(torch.randn(6, generator=g))]


def _grads(step):
    g = torch.Generator().manual_seed(100 + step)
    return [torch.randn(6, 5, generator=g), torch.randn(6, generator=g)]


@pytest.mark.needs_cxx_compiler
@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_same_steps_and_state_as_the_torch_optimizer(name):
    """Four steps, a learning-rate change between them (as the epoch schedule makes): the same
    parameters and the same optimizer state (under torch's keys) as torch's own step."""
    ref_params, params = _params(), _params()
    ref, opt = OPTIMIZERS[name](ref_params), OPTIMIZERS[name](params)
    update = CompiledUpdate(opt, copied=params[:1], dtype=None)
    for step in range(4):
        if step == 2:
            for o in (ref, opt):
                o.param_groups[0]["lr"] *= 0.5
        grads = _grads(step)
        for p, g in zip(ref_params, grads):
            p.grad = g.clone()
        ref.step()
        update.step(grads)
        for p, q in zip(ref_params, params):
            torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)
    for p, q in zip(ref_params, params):
        for key, value in ref.state[p].items():
            torch.testing.assert_close(opt.state[q][key], value, rtol=1e-5, atol=1e-6)
    assert all(p.grad is None for p in params)   # the first (torch) step leaves no stale .grad behind


@pytest.mark.needs_cxx_compiler
def test_bf16_gradients_and_copies():
    """bf16 gradients are widened exactly; the copies are the new weights rounded to bf16, and
    are made again when something else changes a weight (here: loading a checkpoint)."""
    ref_params, params = _params(), _params()
    ref, opt = OPTIMIZERS["sgd"](ref_params), OPTIMIZERS["sgd"](params)
    update = CompiledUpdate(opt, copied=params[:1], dtype=torch.bfloat16)
    (w16,) = update.weights()
    assert w16.dtype == torch.bfloat16 and torch.equal(w16, params[0].detach().bfloat16())
    for step in range(3):
        grads = [g.bfloat16() for g in _grads(step)]
        for p, g in zip(ref_params, grads):
            p.grad = g.float()
        ref.step()
        update.step(grads)
        torch.testing.assert_close(params[0], ref_params[0], rtol=1e-5, atol=1e-6)
        (w16,) = update.weights()
        assert torch.equal(w16, params[0].detach().bfloat16())
    saved = copy.deepcopy(params[0].detach())
    with torch.no_grad():
        params[0].mul_(2.0)                          # e.g. a notebook edit; stale copies must not be used
    assert torch.equal(update.weights()[0], params[0].detach().bfloat16())
    with torch.no_grad():
        params[0].copy_(saved)                       # as load_state_dict does
    assert torch.equal(update.weights()[0], saved.bfloat16())


@pytest.mark.needs_cxx_compiler
def test_state_continues_in_the_plain_optimizer():
    """A checkpoint's optimizer state from compiled steps resumes in torch's own optimizer."""
    params = _params()
    opt = OPTIMIZERS["adam"](params)
    update = CompiledUpdate(opt, copied=[], dtype=None)
    for step in range(2):
        update.step(_grads(step))
    plain_params = [torch.nn.Parameter(p.detach().clone()) for p in params]
    plain = OPTIMIZERS["adam"](plain_params)
    plain.load_state_dict(copy.deepcopy(opt.state_dict()))   # as from a checkpoint file: no shared tensors
    for p, g in zip(plain_params, _grads(2)):
        p.grad = g
    plain.step()
    update.step(_grads(2))
    for p, q in zip(plain_params, params):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make, match", [
    (lambda ps: torch.optim.SGD(ps, lr=0.1), "momentum"),
    (lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True), "nesterov"),
    (lambda ps: torch.optim.Adam(ps, amsgrad=True), "amsgrad"),
    (lambda ps: torch.optim.RMSprop(ps), "SGD and Adam"),
])
def test_unsupported_optimizers_are_refused(make, match):
    params = _params()
    with pytest.raises(ValueError, match=match):
        CompiledUpdate(make(params), copied=[], dtype=None)


def test_wrong_number_of_gradients():
    params = _params()
    update = CompiledUpdate(OPTIMIZERS["sgd"](params), copied=[], dtype=None)
    with pytest.raises(ValueError, match="1 gradients for 2 parameters"):
        update.step(_grads(0)[:1])


def _products(step):
    """The weight gradient as factors a.T @ b plus two label-like columns, the bias plain."""
    g = torch.Generator().manual_seed(200 + step)
    return [GradProduct(torch.randn(4, 6, generator=g), torch.randn(4, 5, generator=g),
                        cols=torch.randn(6, 2, generator=g)),
            torch.randn(6, generator=g)]


@pytest.mark.parametrize("hyper", [dict(momentum=0.9, dampening=0.9, weight_decay=1e-2),
                                   dict(momentum=0.5, dampening=0.0, weight_decay=0.0)])
def test_product_sgd_same_steps_and_state_as_torch_sgd(hyper):
    """Four steps with a learning-rate change between them: the same parameters and momentum
    buffers as torch's SGD given the products made out (the first step is torch's own)."""
    ref_params, params = _params(), _params()
    ref = torch.optim.SGD(ref_params, lr=0.05, fused=True, **hyper)
    opt = torch.optim.SGD(params, lr=0.05, fused=True, **hyper)
    update = ProductSGD(opt)
    for step in range(4):
        if step == 2:
            for o in (ref, opt):
                o.param_groups[0]["lr"] *= 0.5
        grads = _products(step)
        for p, g in zip(ref_params, grads):
            p.grad = g.materialize() if isinstance(g, GradProduct) else g.clone()
        ref.step()
        update.step(grads)
        for p, q in zip(ref_params, params):
            torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)
        assert all(p.grad is None for p in params)
    for p, q in zip(ref_params, params):
        torch.testing.assert_close(opt.state[q]["momentum_buffer"], ref.state[p]["momentum_buffer"],
                                   rtol=1e-5, atol=1e-6)


def test_grad_product_materializes_with_its_columns():
    a, b, cols = torch.randn(3, 4), torch.randn(3, 5), torch.randn(4, 2)
    g = GradProduct(a, b, cols).materialize()
    expected = a.t() @ b
    expected[:, :2] += cols
    torch.testing.assert_close(g, expected)


@pytest.mark.parametrize("make, match", [
    (lambda ps: torch.optim.SGD(ps, lr=0.1), "momentum"),
    (lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True), "nesterov"),
    (lambda ps: torch.optim.SGD(ps, lr=torch.tensor(0.1), momentum=0.9), "float lr"),
    (lambda ps: torch.optim.Adam(ps), "not Adam"),
])
def test_product_sgd_refuses_what_it_cannot_step(make, match):
    with pytest.raises(ValueError, match=match):
        ProductSGD(make(_params()))


def test_product_sgd_wrong_number_of_gradients():
    update = ProductSGD(OPTIMIZERS["sgd"](_params()))
    with pytest.raises(ValueError, match="1 gradients for 2 parameters"):
        update.step(_products(0)[:1])


def test_product_sgd_refuses_factors_in_another_dtype():
    params = _params()
    update = ProductSGD(OPTIMIZERS["sgd"](params))
    update.step(_products(0))     # torch's first step (no buffer yet)
    a, b = _products(1)[0][:2]
    with pytest.raises(ValueError, match="buffer's dtype"):
        update.step([GradProduct(a.bfloat16(), b.bfloat16()), torch.zeros(6)])
