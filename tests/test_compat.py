"""Run folders written by fflab 0.1.0 (before the package was restructured) still resume and
evaluate, and what the restructuring added: config groups, renamed keys, divergence checks."""
import json
import shutil
from pathlib import Path

import pytest

from fflab.config import dumps_grouped, groups
from fflab.errors import TrainingDiverged
from fflab.experiments import config_from_dict, read_config
from fflab.train import evaluate_run, fit

OLD = Path(__file__).parent / "fixtures" / "old-run-0.1.0"
QUIET = dict(progress=False, log=lambda s: None)


def test_old_supervised_run_resumes_to_the_same_numbers(tmp_path, tiny_mnist):
    """0.1.0 wrote engine=fused and compile=false (a bool); the run, stopped after epoch 1 of 2,
    continues on the shared engine (the old fused one, renamed) to the numbers 0.1.0 reached."""
    run = tmp_path / "old"
    shutil.copytree(OLD / "supervised", run)
    notes = []
    cfg, recipe = read_config(run, note=notes.append)
    assert (cfg.engine, cfg.compile, recipe) == ("shared", "false", "demo")
    assert notes == ["engine=fused is now called engine=shared"]
    res = fit(cfg, str(run), recipe=recipe, resume=True, **QUIET)
    assert res["engine"] == "shared" and res["epochs"] == 2
    # 0.1.0 resumed the same folder to these (same synthetic data, same CPU arithmetic)
    assert res["train_loss"] == pytest.approx(5.307339986165364, rel=1e-5)
    assert res["test_error_onepass"] == pytest.approx(0.65, abs=0.011)


def test_old_unsupervised_run_evaluates_with_its_renamed_keys(tiny_mnist):
    notes = []
    cfg, _ = read_config(OLD / "unsupervised", note=notes.append)
    assert (cfg.head_lr, cfg.head_weight_decay) == (2e-3, 1e-4)
    assert "config key 'readout_lr' is now called 'head_lr'" in notes
    res = evaluate_run(str(OLD / "unsupervised"))
    old = json.loads((OLD / "unsupervised" / "results.json").read_text())
    assert res["error_readout"] == pytest.approx(old["test_error_readout"], abs=1e-6)


def test_old_fast_learning_config_drops_its_loop_keys():
    d = {"kind": "FastLearningConfig", "hidden": [8], "lr_schedule": "constant"}
    notes = []
    cfg = config_from_dict(d, note=notes.append)
    assert cfg.hidden == (8,) and notes and "lr_schedule" in notes[0]


def test_config_groups_and_the_grouped_listing():
    from fflab.experiments.sequences import SequenceBPConfig
    from fflab.experiments.supervised import SupervisedFFConfig
    cfg = SupervisedFFConfig()
    g = groups(cfg)
    assert list(g) == ["run", "runtime", "optimizer", "head", "objective", "model"]
    assert g["runtime"] == ["device", "dtype", "threads"] and "parallel" in g["run"]
    assert "engine" in g["model"] and "lr" in g["optimizer"] and "peer_norm" in g["objective"]
    assert sum(map(len, g.values())) == len(cfg.__dataclass_fields__)   # every key in one group
    assert "head" not in groups(SequenceBPConfig())                        # only the groups a kind has
    text = dumps_grouped(cfg)
    assert "[runtime]  (changes the numbers by rounding only)" in text
    assert "  engine = 'auto'  # runtime: rounding only" in text


def test_a_loss_that_explodes_without_becoming_inf_is_training_diverged(tmp_path, tiny_mnist):
    from fflab.experiments.supervised import SupervisedFFConfig
    cfg = SupervisedFFConfig(hidden=(16, 16), epochs=2, lr=1e9, threads=1, train_eval_size=100)
    with pytest.raises(TrainingDiverged, match="first step"):
        fit(cfg, str(tmp_path / "r"), **QUIET)
    assert not (tmp_path / "r" / "results.json").exists()


def test_no_recipe_or_loop_module_imports_registries_lazily():
    """The loop imports the experiments table at the top; nothing fills a table on import."""
    src = Path(__file__).parents[1] / "src" / "fflab"
    for name in ("train.py", "runs.py"):
        text = (src / name).read_text()
        assert "_load_all" not in text and "register_" not in text
    import fflab.experiments as ex
    assert set(ex.KINDS) == {"SupervisedFFConfig", "BPConfig", "UnsupervisedFFConfig", "RecurrentFFConfig",
                             "LocalRecurrentFFConfig", "LocalBPConfig", "SequenceFFConfig", "SequenceBPConfig",
                             "FastLearningConfig"}
