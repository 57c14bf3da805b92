"""fit(data=...): training any image recipe on arrays the caller holds, with clear errors."""
import dataclasses
import json

import pytest
import torch

import fflab
from fflab.errors import ConfigError, DataError
from fflab.experiments.supervised import SupervisedFFConfig
from fflab.inputs import prepare
from fflab.recipes import get_recipe
from fflab.train import evaluate_run

QUIET = dict(progress=False, log=lambda s: None)


def _rgb(n: int, classes: int = 4, seed: int = 0):
    """(n, 3, 8, 8) float images whose class sets one colour channel's brightness."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = torch.rand(n, 3, 8, 8, generator=g) * 0.3
    x[torch.arange(n), y % 3] += 0.5 + 0.1 * (y // 3)[:, None, None]
    return x.clamp(0, 1), y


def test_prepare_infers_shape_and_classes_and_flattens():
    x, y = _rgb(20)
    d, shape = prepare((x, y, x[:6], y[:6]))
    assert shape.image_shape == (3, 8, 8) and shape.num_classes == 4
    assert d["x_train"].shape == (20, 192) and d["y_train"].dtype == torch.int64
    u8 = (x * 255).round().to(torch.uint8).numpy()           # numpy uint8 images are scaled
    d2, _ = prepare({"x_train": u8, "y_train": y.numpy(), "x_test": u8[:6], "y_test": y[:6].numpy()})
    assert torch.allclose(d2["x_train"], d["x_train"], atol=1 / 255)
    assert prepare((x.reshape(20, -1), y, x[:6].reshape(6, -1), y[:6]))[1].image_shape == (3, 8, 8)
    assert prepare((torch.rand(5, 784), y[:5], torch.rand(2, 784), y[:2]))[1].image_shape == (1, 28, 28)


@pytest.mark.parametrize("bad, says", [
    (lambda x, y: (x * 2, y, x, y), "x_train has values in"),
    (lambda x, y: (x, y.float(), x, y), "y_train has dtype"),
    (lambda x, y: (x, y[:-1], x, y), r"y_train has shape \(19,\); expected \(20,\)"),
    (lambda x, y: (x, y, x[:, :2], y), "x_train images are .* but x_test images are"),
    (lambda x, y: (x, y, x, y - 1), "y_test holds the label -1"),
    (lambda x, y: (x, y, [1, 2], y), "x_test is a list"),
    (lambda x, y: (x, y, x), "data has 3 arrays"),
    (lambda x, y: (x.int(), y, x, y), "x_train has dtype torch.int32"),
    (lambda x, y: (x.clone().fill_(float("nan")), y, x, y), "x_train holds NaN"),
    (lambda x, y: (x, y * 0, x, y * 0), "at least 2"),
])
def test_bad_arrays_are_errors_that_name_them(bad, says):
    x, y = _rgb(20)
    with pytest.raises(DataError, match=says):
        prepare(bad(x, y))
    with pytest.raises(DataError, match="lacks y_test"):
        prepare({"x_train": x, "y_train": y, "x_test": x})


def test_fit_trains_a_recipe_on_held_arrays_and_the_run_reloads(tmp_path):
    x, y = _rgb(200)
    xt, yt = _rgb(40, seed=1)
    cfg = get_recipe("demo").config(quick=True)
    res = fflab.fit(cfg, str(tmp_path / "r"), data=(x, y, xt, yt), **QUIET)
    assert res["test_error_goodness"] < 0.75                 # 4 classes: it learned something
    run = tmp_path / "r"
    assert json.loads((run / "data.json").read_text()) == {"image_shape": [3, 8, 8], "num_classes": 4}
    assert json.loads((run / "config.json").read_text())["dataset"] == "in-memory"
    again = evaluate_run(str(run), data=(x, y, xt, yt))
    assert again["error_goodness"] == pytest.approx(res["test_error_goodness"])
    with pytest.raises(ConfigError, match="pass them as data="):
        evaluate_run(str(run))


@pytest.mark.parametrize("recipe", ["bp-mlp", "ff-unsup-4x2000", "ff-recurrent"])
def test_other_image_recipes_take_held_arrays(tmp_path, recipe):
    x, y = _rgb(120, classes=3)
    cfg = get_recipe(recipe).config(quick=True)
    res = fflab.fit(cfg, str(tmp_path / "r"), data={"x_train": x, "y_train": y, "x_test": x[:30],
                                                      "y_test": y[:30]}, **QUIET)
    assert any(k.startswith("test_error") for k in res)


def test_the_mnist_cnn_refuses_other_shapes(tmp_path):
    x, y = _rgb(20)
    with pytest.raises(ConfigError, match="model=cnn is the MNIST CNN"):
        fflab.fit(get_recipe("bp-cnn").config(quick=True), str(tmp_path / "r"), data=(x, y, x, y), **QUIET)


def test_numpy_arrays_and_resume(tmp_path):
    x, y = _rgb(100)
    arrays = (x.numpy(), y.numpy(), x[:20].numpy(), y[:20].numpy())
    cfg = SupervisedFFConfig(hidden=(16, 16), epochs=2, threads=1, train_eval_size=50)
    stopped = fflab.fit(cfg, str(tmp_path / "r"), data=arrays, stop_after_epoch=1, **QUIET)
    assert stopped == {"interrupted_after_epoch": 1}
    from fflab.experiments import read_config
    cfg2, _ = read_config(tmp_path / "r")
    res = fflab.fit(cfg2, str(tmp_path / "r"), data=arrays, resume=True, **QUIET)
    assert res["epochs"] == 2
    with pytest.raises(ConfigError, match="pass them again"):
        fflab.fit(cfg2, str(tmp_path / "r2"), **QUIET)


def test_dataset_folder_trains_from_an_image_folder(tmp_path):
    """dataset=folder:PATH: the layout people keep their own images in."""
    from PIL import Image
    x, y = _rgb(60, classes=3)
    for split, (xs, ys) in (("train", (x[:45], y[:45])), ("test", (x[45:], y[45:]))):
        for i, (img, label) in enumerate(zip(xs, ys)):
            folder = tmp_path / "imgs" / split / f"class{int(label)}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = (img.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
            Image.fromarray(pixels, "RGB").save(folder / f"{i}.png")
    cfg = dataclasses.replace(get_recipe("demo").config(quick=True), dataset=f"folder:{tmp_path / 'imgs'}")
    res = fflab.fit(cfg, str(tmp_path / "r"), **QUIET)
    assert json.loads((tmp_path / "r" / "data.json").read_text()) == {"image_shape": [3, 8, 8], "num_classes": 3}
    assert evaluate_run(str(tmp_path / "r"))["error_goodness"] == pytest.approx(res["test_error_goodness"])
    with pytest.raises(ConfigError, match="folder:PATH"):
        fflab.fit(dataclasses.replace(cfg, dataset="nope"), str(tmp_path / "r3"), **QUIET)
