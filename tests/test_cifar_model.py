"""CIFAR-10 nets of locally connected layers (the paper's "Experiments with CIFAR-10" section,
Table 1): the layer against explicit loops, the recurrent dynamics, locality, the recipes."""
import pytest
import torch
import torch.nn.functional as F

import fflab.experiments
from fflab.config import apply_overrides, to_dict
from fflab.errors import ConfigError
from fflab.experiments import Kind, config_from_dict
from fflab.experiments.local_recurrent import (
    IMPLS,
    LocalBPConfig,
    LocalBPNet,
    LocalLinear,
    LocalRecurrentFFConfig,
    LocalRecurrentFFNet,
    LocalRecurrentLayer,
    build,
    build_bp,
    materialized,
)
from fflab.layers import normalize
from fflab.recipes.cifar import RECIPES
from fflab.runtime import Runtime
from fflab.task import DataShape
from fflab.train import evaluate_run, fit

SHAPE = DataShape((3, 8, 8), 10)
RT = Runtime(torch.device("cpu"))


# ----------------------------------------------------------------------------- references
def loop_local(x, m):
    """Each unit's input by explicit loops over its field: (B, C, H, W) -> (B, U, H_out, W_out)."""
    c_in, h, w = m.in_shape
    U, p, s, pad = m.units_per_location, m.patch, m.stride, m.padding
    out = torch.zeros(x.shape[0], U, m.h_out, m.w_out, dtype=torch.float64)
    wt = m.weight.detach().double()
    for i in range(m.h_out):
        for j in range(m.w_out):
            l = i * m.w_out + j
            for u in range(U):
                acc = torch.zeros(x.shape[0], dtype=torch.float64)
                for c in range(c_in):
                    for di in range(p):
                        for dj in range(p):
                            y, xx = i * s + di - pad, j * s + dj - pad
                            if 0 <= y < h and 0 <= xx < w:
                                acc += x[:, c, y, xx].double() * wt[l, c * p * p + di * p + dj, u]
                if m.bias is not None:
                    acc += m.bias.detach().double()[u * m.num_locations + l]
                out[:, u, i, j] = acc
    return out


def loop_matrix(m):
    """The (out, in) matrix of ``m`` (no bias), entry by entry from explicit loops."""
    c_in, h, w = m.in_shape
    U, p, s, pad = m.units_per_location, m.patch, m.stride, m.padding
    mat = torch.zeros(m.out_features, m.in_features)
    for i in range(m.h_out):
        for j in range(m.w_out):
            l = i * m.w_out + j
            for u in range(U):
                for c in range(c_in):
                    for di in range(p):
                        for dj in range(p):
                            y, xx = i * s + di - pad, j * s + dj - pad
                            if 0 <= y < h and 0 <= xx < w:
                                mat[u * m.num_locations + l, c * h * w + y * w + xx] = \
                                    m.weight.detach()[l, c * p * p + di * p + dj, u]
    return mat


def randomize(module, std=0.3, seed=1):
    """Nonzero biases too, so the references check where they enter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)


# ----------------------------------------------------------------------------- the layer
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("in_shape, units, patch, stride, padding, tile", [
    ((3, 5, 6), 2, 3, 1, 1, 8),     # one tile, bigger than the map
    ((2, 5, 7), 3, 3, 1, 1, 2),     # tiles past the map's edge (cropped)
    ((2, 7, 7), 2, 3, 2, 1, 2),     # stride 2
    ((1, 6, 6), 1, 5, 1, 2, 4),
])
def test_local_linear_matches_explicit_loops(impl, in_shape, units, patch, stride, padding, tile):
    torch.manual_seed(0)
    m = LocalLinear(in_shape, units, patch, stride=stride, padding=padding, impl=impl, tile=tile)
    randomize(m)
    x = torch.rand(3, *in_shape)
    out = m(x.reshape(3, -1))
    assert out.shape == (3, m.out_features)
    torch.testing.assert_close(out.double(), loop_local(x, m).reshape(3, -1), rtol=1e-5, atol=1e-5)
    with materialized(m):     # the cached operator gives the same numbers
        torch.testing.assert_close(m(x), out)
    assert m._op is None


def test_weight_gradient_is_the_same_for_every_impl():
    torch.manual_seed(0)
    x, grads = torch.rand(4, 2 * 6 * 6), []
    for impl in IMPLS:
        m = LocalLinear((2, 6, 6), 2, 3, padding=1, impl=impl, tile=4)
        randomize(m)
        (m(x).sin().sum()).backward()
        grads.append((m.weight.grad, m.bias.grad))
    for g in grads[1:]:
        torch.testing.assert_close(g[0], grads[0][0])
        torch.testing.assert_close(g[1], grads[0][1])


def test_layer_bottom_up_and_top_down_match_explicit_loops():
    torch.manual_seed(0)
    below, above = (3, 5, 5), (2, 5, 5)
    layer = LocalRecurrentLayer(below, 2, 3, above)
    top = LocalRecurrentLayer((2, 5, 5), 2, 3, 10)      # the top layer: dense top-down from 10 labels
    randomize(layer)
    randomize(top)
    xb, xa, lab = torch.rand(4, *below), torch.rand(4, *above), torch.rand(4, 10)
    ref = F.relu(loop_local(xb, layer.up) + loop_local(xa, layer.down)).reshape(4, -1)
    torch.testing.assert_close(layer(xb.reshape(4, -1), xa.reshape(4, -1)).double(), ref, rtol=1e-5, atol=1e-5)
    ref_top = F.relu(loop_local(xa, top.up).reshape(4, -1) + lab.double() @ top.down.weight.double().T)
    torch.testing.assert_close(top(xa.reshape(4, -1), lab).double(), ref_top, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.bottom_up(xb.reshape(4, -1)).double(),
                               F.relu(loop_local(xb, layer.up)).reshape(4, -1), rtol=1e-5, atol=1e-5)


def test_full_size_geometry():
    net = LocalRecurrentFFNet((3, 32, 32), 3, 10)
    assert net.widths == [3072] * 3
    for i, layer in enumerate(net.layers):
        assert layer.out_shape == (3, 32, 32) and layer.threshold == 3072
        assert layer.up.weight.shape == (1024, 363, 3)          # 11x11 fields of 3 channels
        top_down = (3072, 10) if i == 2 else (1024, 363, 3)
        assert layer.down.weight.shape == top_down
    with torch.no_grad():
        states = net.run(torch.rand(2, 3072), torch.tensor([1, 2]), 1)
    assert [h.shape for h in states[-1]] == [(2, 3072)] * 3
    bp = LocalBPNet((3, 32, 32), 2, 10)
    assert bp(torch.rand(2, 3072)).shape == (2, 10)


# ----------------------------------------------------------------------------- dynamics
def tiny_net(layers=3, damping=0.3, goodness="ssq", impl="tiled", seed=0):
    torch.manual_seed(seed)
    net = LocalRecurrentFFNet((3, 5, 5), layers, 10, units_per_location=2, patch=3, damping=damping,
                              goodness=goodness, impl=impl)
    randomize(net, std=0.3, seed=seed + 1)
    return net


def reference_run(net, x, labels, iterations):
    """Bottom-up init, then synchronous damped iterations, with matrices from explicit loops."""
    W = [loop_matrix(layer.up) for layer in net.layers]
    V = [loop_matrix(layer.down) if isinstance(layer.down, LocalLinear) else layer.down.weight.detach()
         for layer in net.layers]
    bias = [layer.up.bias.detach() for layer in net.layers]
    hs, below = [], normalize(x)
    for w, b in zip(W, bias):
        hs.append(F.relu(below @ w.T + b))
        below = normalize(hs[-1])
    out, top, L = [hs], normalize(F.one_hot(labels, 10).float()), len(W)
    for _ in range(iterations):
        new = []
        for i in range(L):
            below = normalize(x) if i == 0 else normalize(hs[i - 1])
            above = top if i == L - 1 else normalize(hs[i + 1])
            c = F.relu(below @ W[i].T + above @ V[i].T + bias[i])
            new.append(net.damping * hs[i] + (1 - net.damping) * c)
        hs = new
        out.append(hs)
    return out


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("layers, damping", [(2, 0.3), (3, 0.0), (3, 0.7)])
def test_dynamics_match_reference_loop(impl, layers, damping):
    net = tiny_net(layers, damping, impl=impl)
    x, y = torch.rand(4, 75), torch.tensor([0, 3, 9, 3])
    ref = reference_run(net, x, y, 2)
    with torch.no_grad():
        traj = net.run(x, y, 2)
        with materialized(net):
            traj_cached = net.run(x, y, 2)
        # RecurrentFFNet's own step (the image multiplied again at every iteration): the same states
        plain = [net.init_states(x)]
        top = net.label_input(y, 4, x.device)
        for _ in range(2):
            plain.append(net.step(plain[-1], x, top))
    assert len(traj) == 3 and all(len(st) == layers for st in traj)
    for got in (traj, traj_cached, plain):
        for st, st_ref in zip(got, ref):
            for h, h_ref in zip(st, st_ref):
                torch.testing.assert_close(h, h_ref, rtol=1e-5, atol=1e-5)


def test_no_gradient_crosses_a_layer():
    net = tiny_net(3)
    x, y = torch.rand(4, 75), torch.tensor([1, 2, 3, 4])
    for t in (1, 2):
        for l in range(3):
            net.zero_grad(set_to_none=True)
            traj = net.run(x, y, 2)
            traj[t][l].square().sum().backward()
            for k, layer in enumerate(net.layers):
                grads = [p.grad for p in layer.parameters()]
                if k == l:
                    assert any(g is not None and g.abs().sum() > 0 for g in grads)
                else:
                    assert all(g is None or g.abs().sum() == 0 for g in grads), (t, l, k)


def test_training_engine_equals_plain_autograd():
    """The engine's shared image product and per-step operators give the gradients of every
    layer's FF loss at every iteration, computed with RecurrentFFNet's own step."""
    from fflab.experiments.local_recurrent import LocalRecurrentEngine
    net = tiny_net(3)
    x, y, y_neg = torch.rand(4, 75), torch.tensor([1, 2, 3, 4]), torch.tensor([5, 6, 7, 8])
    top = net.label_input(torch.cat([y, y_neg]), 8, x.device)
    T = 3
    net.zero_grad(set_to_none=True)
    states = [torch.cat([h, h]) for h in net.init_states(x)]
    loss_ref = 0
    for _ in range(T):
        states = net.step(states, torch.cat([x, x]), top)
        loss_ref = loss_ref + sum(layer.local_loss(h[:4], h[4:]) for layer, h in zip(net.layers, states))
    loss_ref.backward()
    ref = {n: p.grad.clone() for n, p in net.named_parameters()}
    net.zero_grad(set_to_none=True)
    engine = LocalRecurrentEngine(net, T, RT)
    with materialized(net):
        bu = engine.bottom_up(x)
        loss = engine.ff_grads(bu, x, top)
    torch.testing.assert_close(loss, loss_ref.detach())
    for n, p in net.named_parameters():
        torch.testing.assert_close(p.grad, ref[n], rtol=1e-4, atol=1e-6, msg=n)


# ----------------------------------------------------------------------------- tasks and recipes
def synthetic(n_train=100, n_test=50, seed=0):
    """(N, 3, 8, 8) images in [0, 1]: each class a bright 2x2 square at its own place, plus noise."""
    g = torch.Generator().manual_seed(seed)

    def make(n):
        y = torch.arange(n) % 10
        x = 0.2 * torch.rand(n, 3, 8, 8, generator=g)
        for k in range(10):
            i, j = divmod(k, 4)
            x[y == k, :, 2 * i:2 * i + 2, 2 * j:2 * j + 2] += 0.8
        return x.clamp(0, 1), y
    return (*make(n_train), *make(n_test))


@pytest.fixture
def kinds(monkeypatch):
    table = dict(fflab.experiments.KINDS)
    table["LocalRecurrentFFConfig"] = Kind(LocalRecurrentFFConfig, build=build)
    table["LocalBPConfig"] = Kind(LocalBPConfig, build=build_bp)
    monkeypatch.setattr(fflab.experiments, "KINDS", table)


def quiet_fit(cfg, out, data):
    return fit(cfg, str(out), data=data, progress=False, log=lambda s: None)


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.name for r in RECIPES])
def test_quick_recipes_fit_on_small_images(tmp_path, kinds, recipe):
    full = recipe.config()
    assert full.dataset == "cifar10" and full.patch == 11 and full.units_per_location == 3
    assert full.hidden_layers == (3 if recipe.name.endswith("3l") else 2)
    cfg = apply_overrides(recipe.config(quick=True), {"threads": 1, "train_subset": 60, "test_subset": 20,
                                                      "train_eval_size": 20, "batch_size": 30})
    assert cfg.patch == 3
    res = quiet_fit(cfg, tmp_path / recipe.name, synthetic(60, 20))
    if isinstance(cfg, LocalBPConfig):
        assert 0 <= res["test_error"] <= 1
    else:
        assert full.iterations == 10 and full.eval_window == (4, 6) and full.damping == 0.3
        assert cfg.goodness == ("min_ssq" if "minssq" in recipe.name else "ssq")
        for key in ("test_error_goodness", "test_error_onepass", "train_error_goodness", "test_error_iter1"):
            assert 0 <= res[key] <= 1, key
        assert res["engine"] == "autograd" and res["local_impl"] == "tiled"
        assert (tmp_path / recipe.name / "settling.safetensors").exists()


def test_ff_min_ssq_learns_small_images(tmp_path, kinds):
    """min ssq (positive data has LOW activity): both tests learn a separable set."""
    cfg = LocalRecurrentFFConfig(hidden_layers=2, units_per_location=3, patch=3, iterations=3, eval_window=(2, 3),
                                 goodness="min_ssq", epochs=10, batch_size=25, lr=3e-3, head_lr=1e-2,
                                 train_eval_size=50, threads=1, lr_schedule="constant")
    assert build(cfg, RT, SHAPE).modules["net"].layers[0].threshold == -192     # -(3 x 8 x 8)
    data = synthetic(200, 100)
    res = quiet_fit(cfg, tmp_path / "ff", data)
    assert res["test_error_goodness"] < 0.2 and res["test_error_onepass"] < 0.2, res
    # The run folder rebuilds the same net (config round trip, checkpointed weights).
    again = evaluate_run(str(tmp_path / "ff"), data=data)
    assert again["error_goodness"] == pytest.approx(res["test_error_goodness"])
    assert again["error_onepass"] == pytest.approx(res["test_error_onepass"])


def test_bp_baseline_learns_separable_set(tmp_path, kinds):
    cfg = LocalBPConfig(hidden_layers=2, units_per_location=3, patch=3, epochs=4, batch_size=25, lr=3e-3,
                        train_eval_size=50, threads=1)
    res = quiet_fit(cfg, tmp_path / "bp", synthetic(200, 100))
    assert res["test_error"] <= 0.05, res


def test_bad_configs_are_clear_errors():
    with pytest.raises(ConfigError, match="patch"):
        LocalRecurrentFFConfig(patch=4)
    with pytest.raises(ConfigError, match="hidden_layers"):
        LocalBPConfig(hidden_layers=0)
    with pytest.raises(ConfigError, match="local_impl"):
        LocalRecurrentFFConfig(local_impl="conv")
    small = dict(patch=3, iterations=3)
    with pytest.raises(ConfigError, match="engine"):
        build(LocalRecurrentFFConfig(**small, eval_window=(1, 2), engine="shared"), RT, SHAPE)
    with pytest.raises(ConfigError, match="eval_window"):
        build(LocalRecurrentFFConfig(**small, eval_window=(2, 4)), RT, SHAPE)
    with pytest.raises(ConfigError, match="eval_from_layer"):
        build(LocalRecurrentFFConfig(**small, eval_window=(1, 2), eval_from_layer=2), RT, SHAPE)
    cfg = apply_overrides(LocalRecurrentFFConfig(), ["hidden_layers=3", "eval_window=3,5", "goodness=min_ssq"])
    assert cfg.eval_window == (3, 5) and cfg.hidden_layers == 3


def test_config_round_trip(kinds):
    for cfg in (LocalRecurrentFFConfig(hidden_layers=3, goodness="min_ssq", eval_window=(3, 5)),
                LocalBPConfig(hidden_layers=3, patch=5)):
        assert config_from_dict(to_dict(cfg)) == cfg


def test_plot_shows_the_local_fields_as_rgb_tiles(tmp_path):
    """fflab plot: the first map's bottom-up fields of a CIFAR-style run, one RGB tile per unit."""
    import fflab
    from fflab import plot
    from fflab.recipes import get_recipe
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(60, 3, 8, 8, generator=g), torch.arange(60) % 3
    cfg = get_recipe("cifar-ff-minssq-2l").config(quick=True)
    fflab.fit(cfg, str(tmp_path / "r"), data=(x, y, x[:20], y[:20]), progress=False, log=lambda s: None)
    out = plot.plot_receptive_fields(tmp_path / "r", n=16)
    assert out is not None and out.stat().st_size > 0
    from matplotlib import image
    assert image.imread(out).shape[-1] in (3, 4)     # a colour picture
