"""Frozen-feature linear readout (fflab.readout, `fflab readout`)."""
import hashlib
import json

import pytest
import torch

from fflab.cli.main import main
from fflab.config import apply_overrides
from fflab.errors import ConfigError
from fflab.experiments.unsupervised import UnsupervisedFFConfig, build_net
from fflab.readout import extract_features, fit_logistic, frozen_readout
from fflab.train import fit


def blobs(n, d=20, seed=0, noise=0.3):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(10, d, generator=torch.Generator().manual_seed(123))
    y = torch.arange(n) % 10
    return centers[y] + noise * torch.randn(n, d, generator=g), y


def test_logistic_separates_blobs_and_is_deterministic():
    f, y = blobs(300)
    w1, b1 = fit_logistic(f, y, weight_decay=0.0, max_iter=100)
    w2, b2 = fit_logistic(f, y, weight_decay=0.0, max_iter=100)
    assert torch.equal(w1, w2) and torch.equal(b1, b2)
    assert (torch.addmm(b1, f, w1.t()).argmax(1) == y).all()


def test_weight_decay_shrinks_weights_and_matches_its_optimum():
    f, y = blobs(200)
    small = fit_logistic(f, y, weight_decay=1e-4, max_iter=200)[0]
    big = fit_logistic(f, y, weight_decay=1.0, max_iter=200)[0]
    assert big.norm() < 0.5 * small.norm()
    # at the optimum the penalized loss has zero gradient in W
    w, b = fit_logistic(f, y, weight_decay=0.1, max_iter=300)
    w = w.clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(torch.addmm(b, f, w.t()), y) + 0.05 * w.square().sum()
    (gw,) = torch.autograd.grad(loss, w)
    assert gw.abs().max() < 1e-4


def test_penalty_is_chosen_on_validation_not_test():
    f, y = blobs(400, noise=2.0)
    ft, yt = blobs(200, seed=1, noise=2.0)
    res = frozen_readout(f, y, ft, yt, weight_decays=[0.0, 1e-2, 1e2], val_size=100)
    assert set(res.val_errors) == {"0.0", "0.01", "100.0"}
    best = min(res.val_errors.values())
    assert res.val_errors[repr(res.weight_decay)] == best
    # permuting the test labels changes the test error but not which penalty is chosen
    res2 = frozen_readout(f, y, ft, yt[torch.randperm(200, generator=torch.Generator().manual_seed(0))],
                          weight_decays=[0.0, 1e-2, 1e2], val_size=100)
    assert res2.weight_decay == res.weight_decay and res2.test_error != res.test_error


@pytest.mark.parametrize("kw, match", [(dict(weight_decays=[]), "non-empty"),
                                       (dict(weight_decays=[-1.0]), ">= 0"),
                                       (dict(weight_decays=[0.0], val_size=0), "val_size")])
def test_bad_arguments_are_config_errors(kw, match):
    f, y = blobs(50)
    with pytest.raises(ConfigError, match=match):
        frozen_readout(f, y, f, y, **{"val_size": 10, **kw})


def test_features_are_unit_rms_per_layer():
    cfg = apply_overrides(UnsupervisedFFConfig(), dict(hidden=(16, 8)))
    net = build_net(cfg)
    f = extract_features(net, torch.rand(30, 784), [0, 1], chunk=7)
    assert f.shape == (30, 24) and f.dtype == torch.float32
    # normalized activity vectors (paper section 2): unit root-mean-square per layer
    for part in (f[:, :16], f[:, 16:]):
        rms = part.square().mean(1).sqrt()
        assert torch.allclose(rms[rms > 0], torch.ones_like(rms[rms > 0]), atol=1e-4)


def test_cli_refits_readout_without_touching_ff_weights(tmp_path, tiny_mnist, capsys):
    cfg = apply_overrides(UnsupervisedFFConfig(), dict(hidden=(24, 24, 24), readout_layers=(1, 2), epochs=1,
                                                       batch_size=50, train_eval_size=100, threads=1))
    run = tmp_path / "r"
    fit(cfg, str(run), progress=False, log=lambda s: None)
    digest = hashlib.sha256((run / "model.safetensors").read_bytes()).hexdigest()
    assert main(["readout", str(run), "--weight-decay", "0,0.01", "--val-size", "100", "--max-iter", "50"]) == 0
    assert "test error" in capsys.readouterr().out
    assert main(["readout", str(run), "--layers", "0,1,2", "--weight-decay", "0.01", "--val-size", "100",
                 "--max-iter", "50"]) == 0
    entries = json.loads((run / "readout.json").read_text())
    assert [e["layers"] for e in entries] == [[1, 2], [0, 1, 2]]
    assert all(0.0 <= e["test_error"] < 0.5 for e in entries)   # 10 sparse prototypes: learnable
    assert hashlib.sha256((run / "model.safetensors").read_bytes()).hexdigest() == digest
    (run / "readout.json").write_text('[{"layers": [1, 2], "test_')             # damaged: named, not a traceback
    assert main(["readout", str(run), "--weight-decay", "0.01", "--val-size", "100", "--max-iter", "5"]) != 0
    assert "readout.json" in capsys.readouterr().err


def test_cli_rejects_supervised_runs(tmp_path, tiny_mnist, capsys):
    from fflab.experiments.supervised import SupervisedFFConfig
    cfg = apply_overrides(SupervisedFFConfig(), dict(hidden=(16, 16), epochs=1, batch_size=50,
                                                     train_eval_size=50, threads=1))
    fit(cfg, str(tmp_path / "s"), progress=False, log=lambda s: None)
    assert main(["readout", str(tmp_path / "s")]) != 0
    assert "unsupervised" in capsys.readouterr().err
