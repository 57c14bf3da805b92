"""The recurrent top-down FF net (paper section 4): dynamics, locality, training, recipes."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from fflab import runs
from fflab._engines import recurrent as recurrent_fused
from fflab.config import apply_overrides, to_dict
from fflab.errors import ConfigError
from fflab.experiments import config_from_dict as from_dict
from fflab.experiments.recurrent import (
    SETTLING_FILE,
    RecurrentFFConfig,
    RecurrentFFNet,
    label_goodness,
    predict,
    save_settling,
)
from fflab.layers import normalize
from fflab.plot import plot_settling
from fflab.recipes import get_recipe
from fflab.train import build_task, evaluate_run, fit

SMALL = dict(hidden=(32, 32), iterations=4, eval_window=(2, 3), epochs=2, batch_size=50, train_eval_size=100,
             threads=1, eval_every=1)


def small_cfg(**kw):
    return apply_overrides(RecurrentFFConfig(), {**SMALL, **kw})


def quiet(cfg, out, **kw):
    return fit(cfg, str(out), progress=False, log=lambda s: None, **kw)


def net_and_data(damping=0.3, hidden=(16, 12), goodness="ssq", b=6, seed=0):
    torch.manual_seed(seed)
    net = RecurrentFFNet(20, hidden, 10, damping=damping, goodness=goodness)
    # Biases start at zero; make them nonzero so the reference below checks where they enter.
    for layer in net.layers:
        torch.nn.init.normal_(layer.bias, std=0.1)
    return net, torch.rand(b, 20), torch.arange(b) % 10


# ----------------------------------------------------------------------------- dynamics
def reference_run(net, x, labels, iterations):
    """The update rule written out naively: bottom-up init, then synchronous damped iterations."""
    L = len(net.layers)
    hs = []
    below = normalize(x)
    for layer in net.layers:
        hs.append(F.relu(below @ layer.weight.T + layer.bias))
        below = normalize(hs[-1])
    out = [hs]
    top = normalize(F.one_hot(labels, 10).float())
    for _ in range(iterations):
        new = []
        for i, layer in enumerate(net.layers):
            below = normalize(x) if i == 0 else normalize(hs[i - 1])
            above = top if i == L - 1 else normalize(hs[i + 1])
            c = F.relu(below @ layer.weight.T + above @ layer.weight_down.T + layer.bias)
            new.append(net.damping * hs[i] + (1 - net.damping) * c)
        hs = new
        out.append(hs)
    return out


@pytest.mark.parametrize("damping", [0.0, 0.3, 0.9])
def test_run_matches_reference(damping):
    net, x, y = net_and_data(damping, hidden=(16, 12, 8))
    with torch.no_grad():
        traj = net.run(x, y, 5)
    ref = reference_run(net, x, y, 5)
    assert len(traj) == 6 and all(len(st) == 3 for st in traj)  # t = 0..5, 3 hidden layers
    for st, st_ref in zip(traj, ref):
        for h, h_ref in zip(st, st_ref):
            torch.testing.assert_close(h, h_ref)


def test_damping_one_never_changes_state():
    net, x, y = net_and_data(damping=1.0)
    traj = net.run(x, y, 6)
    assert len(traj) == 7
    for st in traj[1:]:
        for h, h0 in zip(st, traj[0]):
            assert torch.equal(h, h0)
    # ... and no weight can learn from it.
    sum(layer.local_loss(h[:3], h[3:]) for layer, h in zip(net.layers, traj[-1])).backward()
    assert all(p.grad is None or not p.grad.any() for p in net.parameters())


def test_damping_is_weight_on_old_state():
    net, x, y = net_and_data(damping=0.3)
    with torch.no_grad():
        old = net.init_states(x)
        new = net.step(old, x, net.label_input(y, x.shape[0], x.device))
        net.damping = 0.0
        computed = net.step(old, x, net.label_input(y, x.shape[0], x.device))
    for h_old, h_new, c in zip(old, new, computed):
        torch.testing.assert_close(h_new, 0.3 * h_old + 0.7 * c)


def test_iteration_count_from_config(tiny_mnist):
    cfg = small_cfg(iterations=6, eval_window=(6, 6))
    task = build_task(cfg, torch.device("cpu"))
    net = task.modules["net"]
    assert net.damping == cfg.damping == 0.3
    res = task.evaluate(tiny_mnist["x_test"][:20], tiny_mnist["y_test"][:20])
    assert sorted(k for k in res if "iter" in k) == sorted(f"error_iter{k}" for k in range(1, 7))
    # A window of one iteration is that iteration's test.
    assert res["error_goodness"] == res["error_iter6"]


def test_top_down_reaches_lower_layer_after_two_iterations():
    net, x, _ = net_and_data(hidden=(16, 12))
    with torch.no_grad():
        a = net.run(x, torch.zeros(6, dtype=torch.long), 3)
        b = net.run(x, torch.full((6,), 7), 3)
    assert torch.equal(a[0][0], b[0][0]) and torch.equal(a[0][1], b[0][1])  # init: label independent
    assert not torch.allclose(a[1][1], b[1][1])   # iteration 1: the top hidden layer sees the label
    assert torch.equal(a[1][0], b[1][0])          # ... the bottom one not yet
    assert not torch.allclose(a[2][0], b[2][0])   # iteration 2: it reaches the bottom layer


def test_neutral_label_is_normalized_tenth():
    net, x, _ = net_and_data()
    top = net.label_input(None, 3, x.device)
    assert torch.allclose(top, torch.ones(3, 10))      # ten entries of 0.1, length-normalized
    one = net.label_input(torch.tensor([4]), 1, x.device)
    assert one[0, 4] == pytest.approx(10 ** 0.5) and one.sum() == pytest.approx(10 ** 0.5)


# ----------------------------------------------------------------------------- locality
def test_no_derivative_crosses_layers_or_time_steps():
    net, x, y = net_and_data(hidden=(16, 12, 8))
    x = x.clone().requires_grad_(True)
    states = net.init_states(x)
    top = net.label_input(y, x.shape[0], x.device)
    for t in range(1, 4):
        prev = [h.clone().requires_grad_(True) for h in states]
        states = net.step(prev, x, top)
        for i, h in enumerate(states):
            net.zero_grad(set_to_none=True)
            layer = net.layers[i]
            g = torch.autograd.grad(layer.goodness(h).sum(), [*prev, x, *net.parameters()], allow_unused=True)
            n_prev = len(prev)
            assert all(d is None for d in g[:n_prev + 1]), f"t={t} layer {i}: derivative reaches t-1 or the image"
            own = {id(p) for p in layer.parameters()}
            for p, d in zip(net.parameters(), g[n_prev + 1:]):
                if id(p) not in own:
                    assert d is None, f"t={t} layer {i}: derivative reaches another layer's weights"
            assert g[n_prev + 1 + [id(p) for p in net.parameters()].index(id(layer.weight))].abs().sum() > 0


def test_step_gradient_equals_sum_of_per_iteration_updates():
    """One training step: the summed loss's gradient on layer i is the sum, over iterations, of
    gradients of layer i's loss computed from detached inputs at t-1 (nothing else contributes)."""
    net, x, y = net_and_data(hidden=(16, 12))
    y_neg = (y + 3) % 10
    top = net.label_input(torch.cat([y, y_neg]), 12, x.device)
    xx = torch.cat([x, x])
    init = [torch.cat([h, h]) for h in net.init_states(x)]
    states, total = init, 0
    for _ in range(3):
        states = net.step(states, xx, top)
        total = total + sum(l.local_loss(h[:6], h[6:]) for l, h in zip(net.layers, states))
    total.backward()
    grads = [l.weight_down.grad.clone() for l in net.layers]
    # Recompute each (layer, iteration) term separately from the recorded (detached) trajectory.
    net.zero_grad(set_to_none=True)
    with torch.no_grad():
        traj = [init]
        for _ in range(3):
            traj.append(net.step(traj[-1], xx, top))
    for i, layer in enumerate(net.layers):
        acc = torch.zeros_like(layer.weight_down)
        for t in range(1, 4):
            h = net.step(traj[t - 1], xx, top)[i]
            acc += torch.autograd.grad(layer.local_loss(h[:6], h[6:]), layer.weight_down)[0]
        torch.testing.assert_close(acc, grads[i])


# ----------------------------------------------------------------------------- the shared engine
def autograd_step(net, x, y, y_neg, iterations):
    """The training step's FF loss by autograd (the ``engine=autograd`` path): grads set, loss returned."""
    b = x.shape[0]
    top = net.label_input(torch.cat([y, y_neg]), 2 * b, x.device).to(x.dtype)
    states, total = [torch.cat([h, h]) for h in net.init_states(x)], 0
    for _ in range(iterations):
        states = net.step(states, torch.cat([x, x]), top)
        total = total + sum(layer.local_loss(h[:b], h[b:]) for layer, h in zip(net.layers, states))
    net.zero_grad(set_to_none=True)
    total.backward()
    return total.detach(), top


@pytest.mark.parametrize("hidden,goodness,damping,peer_norm", [
    ((16, 12), "ssq", 0.3, 0.0), ((16, 12, 8), "min_ssq", 0.3, 0.0), ((9,), "ssq", 0.5, 0.0),
    ((16, 12), "ssq", 0.0, 0.05), ((16, 12), "mean_ssq", 0.7, 0.0)])
def test_fused_step_equals_autograd(hidden, goodness, damping, peer_norm):
    """recurrent_backward sets the same gradients (W, V, b of every layer), the same loss and the
    same peer-normalization statistics as autograd on the step (fp64, so to rounding)."""
    torch.manual_seed(0)
    net = RecurrentFFNet(20, hidden, 10, damping=damping, goodness=goodness, peer_norm=peer_norm).double()
    for layer in net.layers:
        torch.nn.init.normal_(layer.bias, std=0.1)
    x, y = torch.rand(6, 20, dtype=torch.float64), torch.arange(6) % 10
    y_neg = (y + 3) % 10
    twin = RecurrentFFNet(20, hidden, 10, damping=damping, goodness=goodness, peer_norm=peer_norm).double()
    twin.load_state_dict(net.state_dict())
    want, top = autograd_step(twin, x, y, y_neg, 4)
    bu = recurrent_fused.bottom_up(net, x)
    for a, b in zip(bu.init, net.init_states(x)):
        torch.testing.assert_close(a, b)
    got = recurrent_fused.recurrent_backward(net, bu, top, 4)
    torch.testing.assert_close(got, want)
    for (name, p), q in zip(net.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)
        assert p.grad.abs().sum() > 0, name
    for la, lb in zip(net.layers, twin.layers):
        torch.testing.assert_close(la.peer_mean, lb.peer_mean)


def test_fused_damping_one_gives_no_update():
    net, x, y = net_and_data(damping=1.0)
    top = net.label_input(torch.cat([y, (y + 1) % 10]), 12, x.device)
    recurrent_fused.recurrent_backward(net, recurrent_fused.bottom_up(net, x), top, 3)
    assert all(p.grad.abs().sum() == 0 for p in net.parameters())


def test_fused_bf16_step_close_to_fp32():
    net, x, y = net_and_data(hidden=(64, 48), b=32)
    top = net.label_input(torch.cat([y, (y + 1) % 10]), 64, x.device)
    recurrent_fused.recurrent_backward(net, recurrent_fused.bottom_up(net, x), top, 3)
    ref = [p.grad.clone() for p in net.parameters()]
    bu = recurrent_fused.bottom_up(net, x, torch.bfloat16)
    recurrent_fused.recurrent_backward(net, bu, top, 3, dtype=torch.bfloat16)
    for r, p in zip(ref, net.parameters()):
        assert p.grad.dtype == torch.float32                       # fp32 grads for the fp32 master weights
        assert (p.grad - r).norm() < 0.05 * r.norm()


@pytest.mark.parametrize("hidden", [(16, 12), (16, 12, 8), (9,)])
def test_fused_label_goodness_equals_plain(hidden):
    torch.manual_seed(1)
    net = RecurrentFFNet(20, hidden, 10)
    x = torch.rand(7, 20)
    plain = label_goodness(net, x, 4, shared=False)
    torch.testing.assert_close(label_goodness(net, x, 4, chunk=3), plain, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("engine", ["shared", "autograd"])
def test_engines_train_alike(tmp_path, tiny_mnist, engine):
    res = quiet(small_cfg(engine=engine, epochs=2, lr=3e-3), tmp_path / engine)
    assert res["test_error_goodness"] < 0.4, res


# ----------------------------------------------------------------------------- evaluation
def test_predict_window_and_iterations_agree_with_goodness_table():
    net, x, y = net_and_data(hidden=(16, 12), b=7)
    g = label_goodness(net, x, 5, chunk=3)                   # (B, N, T+1, L), chunked
    assert g.shape == (7, 10, 6, 2)
    ref = torch.stack([torch.stack([net.goodness(st) for st in net.run(x, torch.full((7,), c), 5)], 1)
                       for c in range(10)], 1)
    torch.testing.assert_close(g, ref.detach())
    p = predict(net, None, x, iterations=5, window=(2, 4), layers=[1], chunk=4)
    assert set(p) == {"goodness", *(f"iter{k}" for k in range(1, 6))}
    assert torch.equal(p["goodness"], g[:, :, 2:5, 1].mean(-1).argmax(1))
    assert torch.equal(p["iter3"], g[:, :, 3, 1].argmax(1))


def test_bad_config_is_a_clear_error(tiny_mnist):
    for kw, msg in [(dict(eval_window=(3, 9)), "eval_window"), (dict(eval_window=(3,)), "eval_window"),
                    (dict(damping=1.5), "damping"), (dict(iterations=0), "iterations"),
                    (dict(negatives="x"), "negatives"), (dict(eval_from_layer=2), "eval_from_layer"),
                    (dict(engine="analytic"), "engine"), (dict(dtype="float16"), "dtype")]:
        with pytest.raises(ConfigError, match=msg):
            build_task(small_cfg(**kw), torch.device("cpu"))


def test_config_round_trip():
    cfg = small_cfg(goodness="min_ssq", damping=0.5)
    assert from_dict(to_dict(cfg)) == cfg
    assert apply_overrides(cfg, ["eval_window=4,6"]).eval_window == (4, 6)


# ----------------------------------------------------------------------------- training
@pytest.mark.parametrize("goodness", ["ssq", "min_ssq"])
def test_training_learns_both_signs(tmp_path, tiny_mnist, goodness):
    res = quiet(small_cfg(goodness=goodness, epochs=4, lr=3e-3), tmp_path / goodness)
    keys = {f"test_error_{k}" for k in ("goodness", "onepass", "iter1", "iter2", "iter3", "iter4")}
    assert keys <= set(res)
    assert res["test_error_goodness"] < 0.4, res     # chance is 0.9 (measured: 0.005 ssq, 0.27 min ssq)
    assert res["test_error_iter4"] < res["test_error_iter1"], res  # settling helps: the label needs time to reach down
    metrics = runs.read_metrics(tmp_path / goodness)
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]


@pytest.mark.parametrize("kw", [dict(dtype="bfloat16"), dict(jitter=1), dict(negatives="uniform", peer_norm=0.03),
                                dict(hidden=(16, 16, 16), eval_from_layer=1)])
def test_options_run(tmp_path, tiny_mnist, kw):
    res = quiet(small_cfg(epochs=1, **kw), tmp_path / "o")
    assert 0 <= res["test_error_goodness"] <= 1 and 0 <= res["test_error_iter4"] <= 1


def test_run_folder_settling_and_round_trip(tmp_path, tiny_mnist):
    d = tmp_path / "r"
    res = quiet(small_cfg(epochs=1), d)
    assert (d / SETTLING_FILE).is_file()
    again = evaluate_run(str(d))
    for k, v in again.items():
        assert v == res[f"test_{k}"], k
    pytest.importorskip("matplotlib")
    out = plot_settling(d)
    assert out == d / "settling.png" and out.read_bytes()[:4] == b"\x89PNG"
    assert plot_settling(tmp_path) is None                    # a folder without settling data


def test_save_settling_contents(tmp_path):
    from safetensors.torch import load_file
    net, x, y = net_and_data(hidden=(16, 12), goodness="min_ssq")
    save_settling(tmp_path, net, x, y, iterations=3, window=(1, 2))
    t = load_file(str(tmp_path / SETTLING_FILE))
    assert t["goodness"].shape == (6, 10, 4, 2) and torch.equal(t["labels"], y)
    assert t["threshold"].tolist() == [-16.0, -12.0] and t["window"].tolist() == [1, 2]
    assert (t["goodness"] <= 0).all()                          # min ssq goodness is -sum of squares


def test_same_seed_same_numbers(tmp_path, tiny_mnist):
    a = quiet(small_cfg(epochs=1), tmp_path / "a")
    b = quiet(small_cfg(epochs=1), tmp_path / "b")
    assert a["test_error_goodness"] == b["test_error_goodness"]
    assert runs.read_metrics(tmp_path / "a")[-1]["train_loss"] == runs.read_metrics(tmp_path / "b")[-1]["train_loss"]


# ----------------------------------------------------------------------------- recipes
@pytest.mark.parametrize("name", ["ff-recurrent", "ff-recurrent-minssq", "ff-jitter"])
def test_recipe_quick_mode_runs(tmp_path, tiny_mnist, name):
    rec = get_recipe(name)
    full = rec.config()
    cfg = dataclasses.replace(rec.config(quick=True), threads=1, test_subset=100, train_eval_size=100)
    res = fit(cfg, str(tmp_path / name), recipe=name, progress=False, log=lambda s: None)
    assert 0 <= res["test_error_goodness"] <= 1
    assert "DEVIATION" in rec.doc and "Command" in rec.doc
    if name == "ff-jitter":
        assert full.jitter == 2 and full.epochs == 500 and full.hidden == (2000,) * 4
    else:
        assert (full.iterations, full.damping, full.eval_window, full.epochs) == (8, 0.3, (3, 5), 60)
        assert full.hidden == (2000, 2000)
        assert full.goodness == ("min_ssq" if name.endswith("minssq") else "ssq")
        assert "test_error_iter8" in res
