import dataclasses
import json

import pytest
import torch

from fflab import runs
from fflab.config import apply_overrides, to_dict
from fflab.errors import ConfigError
from fflab.experiments import config_from_dict as from_dict
from fflab.experiments.unsupervised import UnsupervisedFFConfig, build_net
from fflab.local import MNIST_LOCAL_LAYERS, FFLocal
from fflab.recipes import get_recipe
from fflab.train import build_task, evaluate_run, fit

CPU = torch.device("cpu")
SMALL = dict(hidden=(24, 24, 24, 24), epochs=2, batch_size=50, train_eval_size=100, threads=1)
SMALL_LOCAL = dict(architecture="local", units_per_location=(2, 2, 2, 2), patch=(5, 3, 3, 3),
                   stride=(2, 1, 1, 1), padding=(2, 1, 1, 1), peer_norm=0.03)


def small_cfg(**kw):
    return apply_overrides(UnsupervisedFFConfig(), {**SMALL, **kw})


def batch(n=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 784, generator=g), torch.arange(n) % 10


def ff_params(task):
    return {k: v.detach().clone() for k, v in task.modules["net"].state_dict().items()}


@pytest.mark.parametrize("arch", [{}, SMALL_LOCAL], ids=["dense", "local"])
def test_readout_gradients_stay_out_of_ff_layers(arch):
    task = build_task(small_cfg(**arch), CPU)
    net, heads = task.modules["net"], task.extra["heads"]
    x, y = batch()
    hs = net(x)
    loss = sum(torch.nn.functional.cross_entropy(head(net.features(hs, layers)), y)
               for head, layers in heads.values())
    loss.backward()
    assert all(p.grad is None for p in net.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0
               for head, _ in heads.values() for p in head.parameters())


@pytest.mark.parametrize("arch", [{}, SMALL_LOCAL], ids=["dense", "local"])
def test_ff_layers_never_see_labels_or_readout(arch):
    """The FF weights after several steps are bit-identical whatever the labels and the readout
    settings: the readout sends no gradient down and the negatives use no labels."""
    x, y = batch(40)
    finals = []
    for labels, overrides in ((y, {}), (y.flip(0), {}), (y, dict(readout_layers=(0,), head_lr=1.0,
                                                                  readout_all_layers=False))):
        task = build_task(small_cfg(**arch, **overrides), CPU)
        g = torch.Generator().manual_seed(3)
        for _ in range(3):
            task.step(x, labels, g)
        finals.append(ff_params(task))
    for other in finals[1:]:
        assert all(torch.equal(finals[0][k], other[k]) for k in finals[0])


def test_step_changes_ff_and_readout_weights():
    task = build_task(small_cfg(), CPU)
    before = ff_params(task)
    heads_before = {n: h.linear.weight.detach().clone() for n, (h, _) in task.extra["heads"].items()}
    x, y = batch()
    loss = task.step(x, y, torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and torch.isfinite(loss)
    after = ff_params(task)
    assert not torch.equal(before["layers.0.weight"], after["layers.0.weight"])
    assert not torch.equal(before["layers.3.weight"], after["layers.3.weight"])
    for name, (head, _) in task.extra["heads"].items():
        assert not torch.equal(heads_before[name], head.linear.weight), name


def test_readout_widths_and_layers():
    task = build_task(small_cfg(hidden=(10, 20, 30, 40)), CPU)
    heads = task.extra["heads"]
    assert heads["readout"][1] == [1, 2, 3] and heads["readout"][0].linear.in_features == 90
    assert heads["readout_all_layers"][1] == [0, 1, 2, 3]
    assert heads["readout_all_layers"][0].linear.in_features == 100
    only = build_task(small_cfg(readout_layers=(2,), readout_all_layers=False), CPU)
    assert set(only.extra["heads"]) == {"readout"} and set(only.modules) == {"net", "readout"}


def test_local_architecture_forward_shapes():
    net = build_net(UnsupervisedFFConfig(architecture="local"))   # default MNIST_LOCAL_LAYERS geometry
    assert all(isinstance(layer, FFLocal) for layer in net.layers)
    assert [layer.out_shape for layer in net.layers] == [(10, 14, 14)] * 4
    assert [layer.patch for layer in net.layers] == [spec["patch"] for spec in MNIST_LOCAL_LAYERS]
    hs = net(torch.rand(3, 784))
    assert [tuple(h.shape) for h in hs] == [(3, 1960)] * 4
    assert net.features(hs, [1, 2, 3]).shape == (3, 3 * 1960)
    small = build_net(small_cfg(**SMALL_LOCAL))
    assert [tuple(h.shape) for h in small(torch.rand(2, 784))] == [(2, 392)] * 4


@pytest.mark.parametrize("overrides, match", [
    (dict(architecture="conv"), "architecture='conv'"),
    (dict(readout_layers=(1, 4)), "readout_layers"),
    (dict(readout_layers=(1, 1)), "readout_layers"),
    (dict(readout_layers=()), "readout_layers"),
    (dict(architecture="local", patch=(5, 3)), "one entry per hidden layer"),
    (dict(architecture="local", patch=(40, 3, 3, 3), padding=(0, 1, 1, 1)), "local layer 0"),
    (dict(blur_passes=-1), "blur_passes"),
    (dict(optimizer="lbfgs"), "optimizer"),
])
def test_bad_config_is_config_error(overrides, match):
    with pytest.raises(ConfigError, match=match):
        build_task(small_cfg(**overrides), CPU)


def test_config_registered_and_round_trips():
    cfg = apply_overrides(UnsupervisedFFConfig(), ["architecture=local", "patch=7x4", "readout_layers=2,3"])
    assert cfg.patch == (7, 7, 7, 7) and cfg.readout_layers == (2, 3)
    assert from_dict(json.loads(json.dumps(to_dict(cfg)))) == cfg
    with pytest.raises(ConfigError, match="unknown config key 'blur'"):
        apply_overrides(cfg, ["blur=3"])


@pytest.mark.parametrize("name, keys", [
    ("ff-unsup-4x2000", ("test_error_readout", "test_error_readout_all_layers", "train_error_readout")),
    ("ff-unsup-local", ("test_error_readout", "test_error_readout_all_layers", "train_error_readout")),
    ("bp-cnn", ("test_error", "train_error")),
])
def test_quick_recipe_runs(name, keys, tmp_path, tiny_mnist):
    r = get_recipe(name)
    assert "Command:" in r.doc and "Runtime:" in r.doc and "Paper:" in r.doc
    cfg = dataclasses.replace(r.config(quick=True), threads=1)
    res = fit(cfg, str(tmp_path / "r"), recipe=name, progress=False, log=lambda s: None)
    on_disk = json.loads((tmp_path / "r" / "results.json").read_text())
    for k in keys:
        assert 0.0 <= res[k] <= 1.0 and on_disk[k] == res[k], k
    if name.startswith("ff-"):
        assert (tmp_path / "r" / "goodness.safetensors").exists()


def test_full_recipes_match_the_paper_setup():
    dense = get_recipe("ff-unsup-4x2000").config()
    assert dense.architecture == "dense" and dense.hidden == (2000,) * 4 and dense.readout_layers == (1, 2, 3)
    local = get_recipe("ff-unsup-local").config()
    assert local.architecture == "local" and local.epochs == 60 and local.peer_norm > 0
    assert local.patch == tuple(s["patch"] for s in MNIST_LOCAL_LAYERS)
    assert get_recipe("bp-cnn").config().model == "cnn"


def test_learns_synthetic_task_and_round_trips(tmp_path, tiny_mnist):
    res = fit(small_cfg(epochs=3), str(tmp_path / "r"), progress=False, log=lambda s: None)
    assert res["test_error_readout"] < 0.2   # 10 sparse prototypes: an easy linear readout
    again = evaluate_run(str(tmp_path / "r"))
    assert again["error_readout"] == res["test_error_readout"]
    assert again["error_readout_all_layers"] == res["test_error_readout_all_layers"]


def test_resume_equals_uninterrupted(tmp_path, tiny_mnist):
    cfg = small_cfg(**SMALL_LOCAL)
    full = fit(cfg, str(tmp_path / "full"), progress=False, log=lambda s: None)
    fit(cfg, str(tmp_path / "part"), progress=False, log=lambda s: None, stop_after_epoch=1)
    resumed = fit(cfg, str(tmp_path / "part"), resume=True, progress=False, log=lambda s: None)
    assert resumed["test_error_readout"] == full["test_error_readout"]
    assert [m["train_loss"] for m in runs.read_metrics(tmp_path / "full")] == \
           [m["train_loss"] for m in runs.read_metrics(tmp_path / "part")]


def test_plots_read_local_run(tmp_path, tiny_mnist):
    pytest.importorskip("matplotlib")
    from fflab import plot
    fit(small_cfg(epochs=1, **SMALL_LOCAL), str(tmp_path / "r"), progress=False, log=lambda s: None)
    assert plot.plot_goodness(tmp_path / "r") is not None
    assert plot.plot_receptive_fields(tmp_path / "r", n=4) is not None   # 5x5 patches from config.json


def test_dead_units_counts_units_never_active():
    from fflab.experiments.unsupervised import dead_units
    from fflab.nets import FFNet
    torch.manual_seed(0)
    net = FFNet.dense(784, [10, 8])
    with torch.no_grad():
        net.layers[0].bias[:4] = -1e6      # 4 of 10 units can never be active
        net.layers[0].bias[4:] = 1e6       # the other 6 always are
        net.layers[1].bias[:] = 1e6         # every unit of layer 2 always active
    x = torch.rand(50, 784)
    assert dead_units(net, x, chunk=16) == pytest.approx([0.4, 0.0])


def test_evaluation_reports_dead_units(tmp_path, tiny_mnist):
    res = fit(small_cfg(epochs=1), str(tmp_path / "r"), progress=False, log=lambda s: None)
    for i in range(4):
        assert 0.0 <= res[f"test_dead_units_layer{i}"] <= 1.0
