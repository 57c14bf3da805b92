"""fflab.plot and ``fflab plot`` on hand-made run folders (no training, no dataset)."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

pytest.importorskip("matplotlib")

from fflab import plot  # noqa: E402
from fflab.cli import plot as plot_cli  # noqa: E402
from fflab.errors import CheckpointError, ConfigError  # noqa: E402
from fflab.plot import _common  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path) -> None:
    path = Path(path)
    assert path.is_file(), path
    data = path.read_bytes()
    assert len(data) > 1000 and data[:8] == PNG_MAGIC, path


def make_run(root: Path, name: str = "run", *, weight: torch.Tensor | None = None, config: dict | None = None,
             goodness: bool = True, iterations: bool = False, kind: str = "ff") -> Path:
    """A run folder as fflab.train writes it: 3 epochs, evaluated at epochs 1 and 3 (eval_every=2)."""
    d = root / name
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"recipe": "x", "kind": "SupervisedFFConfig", **(config or {})}))
    with open(d / "metrics.jsonl", "w") as f:
        for epoch in (1, 2, 3):
            rec = {"epoch": epoch, "train_loss": 10.0 / epoch, "epoch_time_s": 0.5, "wall_time_s": 0.5 * epoch,
                   "lr": 1e-3}
            if epoch != 2:
                e = 0.3 / epoch
                if kind == "ff":
                    rec.update(test_error_goodness=e, test_error_onepass=1.2 * e,
                               train_error_goodness=0.8 * e, train_error_onepass=e)
                else:
                    rec.update(test_error=e, train_error=0.5 * e)
                if iterations:
                    for k in range(1, 9):
                        rec[f"test_error_iter{k}"] = e / k
                        rec[f"train_error_iter{k}"] = 0.5 * e / k
            f.write(json.dumps(rec, sort_keys=True) + "\n")
    g = torch.Generator().manual_seed(0)
    if goodness:
        t = {}
        for i in range(2):
            t[f"pos.{i}"] = 100 + 10 * torch.randn(200, generator=g)
            t[f"neg.{i}"] = 80 + 10 * torch.randn(200, generator=g)
            t[f"threshold.{i}"] = torch.tensor([90.0])
        save_file(t, str(d / "goodness.safetensors"))
    if weight is not None:
        save_file({"net.layers.0.weight": weight.contiguous(), "net.layers.0.bias": torch.zeros(3)},
                  str(d / "model.safetensors"))
    return d


@pytest.fixture
def dense_run(tmp_path):
    return make_run(tmp_path, weight=torch.randn(16, 784, generator=torch.Generator().manual_seed(1)))


def test_importing_fflab_does_not_import_matplotlib():
    code = ("import sys, fflab, fflab.plot, fflab.cli.plot, fflab.train; "
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_learning_curves_out(dense_run, tmp_path):
    out = tmp_path / "elsewhere" / "c.png"
    assert plot.plot_learning_curves(dense_run, out) == out
    assert_png(out)
    assert not (dense_run / "curves.png").exists()


def test_learning_curves_zero_error_and_backprop_keys(tmp_path):
    d = make_run(tmp_path, kind="bp", goodness=False)
    with open(d / "metrics.jsonl", "a") as f:  # a zero error cannot go on a log axis: linear then
        f.write(json.dumps({"epoch": 4, "train_loss": 1.0, "test_error": 0.0, "train_error": 0.0}) + "\n")
    assert_png(plot.plot_learning_curves(d))


def test_goodness(dense_run):
    assert_png(plot.plot_goodness(dense_run))


def test_goodness_absent_is_none(tmp_path):
    assert plot.plot_goodness(make_run(tmp_path, goodness=False)) is None


def test_receptive_fields_dense(dense_run):
    assert_png(plot.plot_receptive_fields(dense_run, dense_run / "rf_first.png", n=9, select="first"))
    with pytest.raises(ValueError, match="select"):
        plot.plot_receptive_fields(dense_run, select="random")


def test_receptive_fields_local_with_geometry(tmp_path):
    # FFLocal layout (L, K, U): 14x14 locations, 11x11 patches, 10 units per location.
    w = torch.randn(196, 121, 10, generator=torch.Generator().manual_seed(2))
    d = make_run(tmp_path, weight=w, config={"patch": 11, "stride": 2, "padding": 5})
    assert_png(plot.plot_receptive_fields(d, n=16))


def test_receptive_fields_local_geometry_from_layer_list(tmp_path):
    w = torch.randn(196, 121, 10)
    d = make_run(tmp_path, weight=w, config={"layers": [{"units_per_location": 10, "patch": 11, "stride": 2}]})
    assert_png(plot.plot_receptive_fields(d))


def test_receptive_fields_local_patch_from_k(tmp_path):
    d = make_run(tmp_path, weight=torch.randn(49, 25, 3))   # no geometry in config: patch = sqrt(25)
    assert_png(plot.plot_receptive_fields(d))


@pytest.mark.parametrize("weight,config", [
    (torch.randn(4, 7, 3), {}),                 # K=7 is no C*patch*patch
    (torch.randn(4, 121, 3), {"patch": 5}),     # K disagrees with the config's patch
    (torch.randn(16, 100, 2), {"patch": 5}),    # 4 input channels: not an image
    (torch.randn(16, 783), {}),                 # dense, not a square image
    (torch.randn(2, 3, 4, 5, 6), {}),           # unknown rank
])
def test_receptive_fields_unknown_layout_is_none(tmp_path, capsys, weight, config):
    d = make_run(tmp_path, weight=weight, config=config)
    assert plot.plot_receptive_fields(d) is None
    assert "no receptive fields" in capsys.readouterr().err


def test_receptive_fields_without_model_is_none(tmp_path, capsys):
    assert plot.plot_receptive_fields(make_run(tmp_path)) is None
    assert "no model.safetensors" in capsys.readouterr().err


def test_plot_run_recurrent_iterations(tmp_path):
    d = make_run(tmp_path, iterations=True)
    paths = plot.plot_run(d)
    assert "iterations.png" in [p.name for p in paths]
    assert_png(d / "iterations.png")


def write_settling(d: Path, *, b: int = 6, n: int = 10, steps: int = 9, layers: int = 2) -> None:
    """settling.safetensors as the recurrent experiment writes it: goodness (B, N, T+1, L)."""
    from fflab.runs import SETTLING_FILE
    g = torch.Generator().manual_seed(0)
    y = torch.arange(b) % n
    goodness = 5 + torch.rand(b, n, steps, layers, generator=g)
    goodness[torch.arange(b), y] += torch.linspace(0, 2, steps)[:, None]   # the correct label settles higher
    save_file({"goodness": goodness, "labels": y, "threshold": torch.full((layers,), 6.0),
               "window": torch.tensor([3, 5]), "eval_layers": torch.arange(layers)},
              str(d / SETTLING_FILE), metadata={"goodness": "sum_sq", "damping": "0.3"})


def test_plot_run_recurrent_settling(tmp_path):
    d = make_run(tmp_path, iterations=True, goodness=False)
    assert plot.plot_settling(d) is None                     # no settling.safetensors yet
    write_settling(d)
    assert [p.name for p in plot.plot_run(d)] == ["curves.png", "iterations.png", "settling.png"]
    assert_png(d / "settling.png")
    (d / "settling.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="settling"):
        plot.plot_settling(d)


def test_iterations_absent_is_none(dense_run):
    assert plot.plot_iterations(dense_run) is None


def test_curve_keys_keep_last_iteration_only():
    keys = ["test_error", "test_error_iter1", "test_error_iter10", "test_error_iter2", "train_error_iter3"]
    assert _common._curve_keys(keys) == ["test_error", "train_error_iter3"]
    assert _common._split_method("test_error_goodness") == ("test", "goodness")
    assert _common._split_method("train_error") == ("train", "error")


def test_compare(tmp_path):
    a = make_run(tmp_path, "a", goodness=False)
    b = make_run(tmp_path, "b", kind="bp", goodness=False)
    out = plot.plot_compare([a, b], tmp_path / "cmp.png", metric=("test_error_goodness", "test_error"))
    assert_png(out)
    with pytest.raises(CheckpointError, match="test_error_goodness"):
        plot.plot_compare([b], tmp_path / "none.png")


@pytest.mark.parametrize("setup", ["missing", "no_metrics", "empty_metrics"])
def test_bad_run_dir_is_checkpoint_error(tmp_path, setup):
    d = tmp_path / "bad"
    if setup != "missing":
        d.mkdir()
    if setup == "empty_metrics":
        (d / "metrics.jsonl").write_text("")
    for fn in (plot.plot_run, plot.plot_learning_curves):
        with pytest.raises(CheckpointError, match="bad"):
            fn(d)


def test_truncated_last_metrics_line_is_skipped(dense_run):
    with open(dense_run / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 4, "train_lo')   # a run writing its next line right now
    assert [r["epoch"] for r in plot.read_run_metrics(dense_run)] == [1, 2, 3]
    with open(dense_run / "metrics.jsonl", "a") as f:
        f.write('\n{"epoch": 5}\n')  # the damaged line is no longer the last: the file is broken
    with pytest.raises(CheckpointError, match="line 4"):
        plot.read_run_metrics(dense_run)


# ----------------------------------------------------------------------------- CLI
def cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fflab")
    plot_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["plot", *argv])


def test_cli_one_run_writes_every_plot_into_the_folder(dense_run, capsys):
    args = cli([str(dense_run)])
    assert args.func(args) == 0
    printed = [Path(p) for p in capsys.readouterr().out.split()]
    assert [p.name for p in printed] == ["curves.png", "goodness.png", "receptive_fields.png"]
    for p in printed:
        assert p.parent == dense_run
        assert_png(p)


def test_cli_several_runs_compare(tmp_path, capsys):
    a, b = make_run(tmp_path, "a", goodness=False), make_run(tmp_path, "b", kind="bp", goodness=False)
    out = tmp_path / "cmp.png"
    args = cli([str(a), str(b), "--out", str(out)])
    assert args.func(args) == 0
    assert str(out) in capsys.readouterr().out.split()
    assert_png(out)


def test_cli_bad_run_dir(tmp_path, dense_run):
    args = cli([str(dense_run), str(tmp_path / "nope")])
    with pytest.raises(CheckpointError, match="nope"):
        args.func(args)
    assert not (dense_run / "curves.png").exists()   # every folder is checked before drawing


def test_cli_negatives_only_options(dense_run):
    args = cli([str(dense_run), "--blur-passes", "3"])
    with pytest.raises(ConfigError, match="negatives"):
        args.func(args)


def test_cli_negatives_gallery(tmp_path, monkeypatch, capsys):
    seen = {}

    def fake_load_mnist(name="mnist", *, data_dir=None, download=True):
        seen.update(name=name, data_dir=data_dir)
        return {"x_train": torch.rand(100, 784, generator=torch.Generator().manual_seed(0)),
                "y_train": torch.arange(100) % 10}

    monkeypatch.setattr("fflab.data.load_mnist", fake_load_mnist)
    out = tmp_path / "neg.png"
    args = cli(["negatives", "--out", str(out), "--blur-passes", "2", "--data-dir", "/some/dir"])
    assert args.func(args) == 0
    assert seen == {"name": "mnist", "data_dir": "/some/dir"}
    assert str(out) in capsys.readouterr().out
    assert_png(out)
