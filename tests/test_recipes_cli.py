"""Every MNIST recipe runs in quick mode; the CLI reports bad input as one clear line."""
import json

import pytest

from fflab.cli.main import main
from fflab.config import apply_overrides
from fflab.recipes import all_recipes
from fflab.train import fit

MNIST_RECIPES = sorted(n for n, r in all_recipes().items() if r.config().dataset == "mnist")


def test_recipe_registry_has_the_papers_results():
    names = set(all_recipes())
    assert {"demo", "ff-paper-4x2000", "ff-official-3x1000", "bp-mlp", "ff-fast"} <= names
    for r in all_recipes().values():
        assert r.claim and r.doc, r.name  # every recipe states its claim and has a docstring


def test_quick_runs_never_compile():
    """``--quick`` is the seconds-long smoke run (and what CI runs): it must not need a C++
    compiler or wait on torch.compile, even for a recipe such as ff-fast that compiles."""
    compiling = [n for n, r in all_recipes().items() if getattr(r.config(), "compile", "false") != "false"]
    assert "ff-fast" in compiling   # the check below has something to check
    for name, r in all_recipes().items():
        assert getattr(r.config(quick=True), "compile", "false") == "false", name


def test_no_recipe_forces_bf16():
    """A recipe that wants bf16 asks for dtype=auto: forced bf16 would run every product 10-80 x
    slower than fp32 on a CPU without native bf16 (AVX2 only), e.g. hours per epoch."""
    dtypes = {n: getattr(r.config(), "dtype", "float32") for n, r in all_recipes().items()}
    assert "auto" in dtypes.values()   # the recipes that were bf16 before
    assert {n: d for n, d in dtypes.items() if d not in ("float32", "auto")} == {}


@pytest.mark.parametrize("name", [n for n in MNIST_RECIPES
                                  if n in ("demo", "ff-paper-4x2000", "ff-official-3x1000", "bp-mlp", "ff-fast")])
def test_supervised_recipes_quick_mode(tmp_path, tiny_mnist, name):
    cfg = apply_overrides(all_recipes()[name].config(quick=True), {"threads": 1})
    res = fit(cfg, str(tmp_path / name), recipe=name, progress=False, log=lambda s: None)
    assert any(k.startswith("test_error") for k in res)
    assert (tmp_path / name / "results.json").exists()


def test_cli_train_eval_and_errors(tmp_path, tiny_mnist, capsys):
    out = tmp_path / "run"
    assert main(["train", "demo", "--quick", "--out", str(out), "--no-progress", "threads=1", "epochs=2"]) == 0
    assert json.loads((out / "config.json").read_text())["epochs"] == 2
    assert main(["eval", str(out), "--json"]) == 0
    assert "error_goodness" in capsys.readouterr().out
    # a finished run folder is never overwritten
    assert main(["train", "demo", "--quick", "--out", str(out), "--no-progress"]) == 2
    assert "already holds a finished run" in capsys.readouterr().err
    # unknown key: one line naming it and the valid keys, exit code 2, no traceback
    assert main(["train", "demo", "--quick", "--out", str(tmp_path / "x"), "lr_rate=1"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'lr_rate'" in err and "valid keys" in err and "Traceback" not in err
    assert main(["train", "no-such-recipe"]) == 2
    assert "unknown recipe" in capsys.readouterr().err
    assert main(["recipes"]) == 0
    assert "ff-paper-4x2000" in capsys.readouterr().out


def test_cli_resume_continues(tmp_path, tiny_mnist):
    from fflab.train import fit as fit_
    cfg = apply_overrides(all_recipes()["demo"].config(quick=True), {"threads": 1, "epochs": 2})
    fit_(cfg, str(tmp_path / "r"), recipe="demo", progress=False, log=lambda s: None, stop_after_epoch=1)
    assert main(["train", "--resume", str(tmp_path / "r"), "--no-progress"]) == 0
    assert json.loads((tmp_path / "r" / "results.json").read_text())["epochs"] == 2


def test_eval_of_a_gpu_run_on_a_machine_without_one(tmp_path, tiny_mnist, capsys):
    """A run folder trained with device=cuda, evaluated where there is no GPU: a clear error
    naming the way out, and --device cpu evaluates it (the weights load onto any device)."""
    import torch
    out = tmp_path / "run"
    assert main(["train", "demo", "--quick", "--out", str(out), "--no-progress", "threads=1"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**cfg, "device": "cuda"}))
    capsys.readouterr()
    if not torch.cuda.is_available():
        assert main(["eval", str(out)]) == 2
        err = capsys.readouterr().err
        assert "CUDA is not available" in err and "--device cpu" in err
    assert main(["eval", str(out), "--device", "cpu", "--json"]) == 0
    assert "error_goodness" in capsys.readouterr().out
