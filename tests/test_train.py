import json

import pytest
import torch

from fflab import runs
from fflab.config import apply_overrides
from fflab.errors import CheckpointError, ConfigError
from fflab.experiments.backprop import BPConfig
from fflab.experiments.supervised import SupervisedFFConfig
from fflab.train import evaluate_run, fit

SMALL = dict(hidden=(32, 32), eval_from_layer=0, epochs=3, batch_size=50, train_eval_size=100, threads=1, eval_every=1)


def small_cfg(**kw):
    return apply_overrides(SupervisedFFConfig(), {**SMALL, **kw})


def test_run_folder_contents(tmp_path, tiny_mnist):
    said = []
    res = fit(small_cfg(), str(tmp_path / "r"), recipe="t", progress=False, log=said.append)
    d = tmp_path / "r"
    for name in ("config.json", "env.json", "metrics.jsonl", "results.json", "model.safetensors", "state.pt"):
        assert (d / name).exists(), name
    assert json.loads((d / "config.json").read_text())["kind"] == "SupervisedFFConfig"
    lines = runs.read_metrics(d)
    assert [m["epoch"] for m in lines] == [1, 2, 3]
    assert {"test_error_goodness", "test_error_onepass", "train_error_goodness", "train_error_onepass",
            "wall_time_s"} <= set(res)
    assert "torch" in json.loads((d / "env.json").read_text())
    # the engine engine=auto resolved to is printed and kept with the numbers
    assert json.loads((d / "results.json").read_text())["engine"] == res["engine"] == "shared"
    assert said[0] == "engine shared | compile false"
    # the synthetic task is easy: FF must learn it
    assert res["test_error_goodness"] < 0.6 and res["test_error_onepass"] < 0.2


def test_same_seed_same_numbers(tmp_path, tiny_mnist):
    a = fit(small_cfg(epochs=2), str(tmp_path / "a"), progress=False, log=lambda s: None)
    b = fit(small_cfg(epochs=2), str(tmp_path / "b"), progress=False, log=lambda s: None)
    fit(small_cfg(epochs=2, seed=1), str(tmp_path / "c"), progress=False, log=lambda s: None)
    la, lb, lc = (runs.read_metrics(tmp_path / n)[-1]["train_loss"] for n in "abc")
    assert la == lb and la != lc
    assert a["test_error_goodness"] == b["test_error_goodness"]


@pytest.mark.parametrize("extra", [
    {}, {"neutral_every": 3, "engine": "shared"},
    {"engine": "shared", "optimizer": "sgd"},    # the net steps via ProductSGD
    pytest.param({"engine": "shared", "compile": "true", "dtype": "bfloat16"},
                 marks=pytest.mark.needs_cxx_compiler)])
def test_resume_equals_uninterrupted(tmp_path, tiny_mnist, extra):
    # neutral_every > 1 keeps cached per-image probabilities, which must survive the checkpoint too;
    # compile with bf16 keeps its optimizer state in the torch optimizer and its bf16 weight copies
    # are made again from the loaded weights
    full = fit(small_cfg(**extra), str(tmp_path / "full"), progress=False, log=lambda s: None)
    part = fit(small_cfg(**extra), str(tmp_path / "part"), progress=False, log=lambda s: None, stop_after_epoch=1)
    assert part == {"interrupted_after_epoch": 1}
    assert not (tmp_path / "part" / "results.json").exists()
    resumed = fit(small_cfg(**extra), str(tmp_path / "part"), resume=True, progress=False, log=lambda s: None)
    for k in ("test_error_goodness", "test_error_onepass", "train_error_goodness"):
        assert resumed[k] == full[k]
    a = runs.read_metrics(tmp_path / "full")
    b = runs.read_metrics(tmp_path / "part")
    assert [m["train_loss"] for m in a] == [m["train_loss"] for m in b]


def test_resume_after_a_torn_metrics_line(tmp_path, tiny_mnist):
    """A run killed while appending to metrics.jsonl resumes; the torn line is dropped, not fatal."""
    full = fit(small_cfg(epochs=2), str(tmp_path / "full"), progress=False, log=lambda s: None)
    d = tmp_path / "part"
    fit(small_cfg(epochs=2), str(d), progress=False, log=lambda s: None, stop_after_epoch=1)
    with open(d / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "train_lo')                       # the kill came mid-write
    assert [m["epoch"] for m in runs.read_metrics(d)] == [1]
    resumed = fit(small_cfg(epochs=2), str(d), resume=True, progress=False, log=lambda s: None)
    assert resumed["test_error_goodness"] == full["test_error_goodness"]
    assert [m["epoch"] for m in runs.read_metrics(d)] == [1, 2]


def test_damaged_run_files_are_clear_errors(tmp_path, tiny_mnist):
    d = tmp_path / "r"
    fit(small_cfg(epochs=2), str(d), progress=False, log=lambda s: None)
    lines = (d / "metrics.jsonl").read_text().splitlines()
    (d / "metrics.jsonl").write_text("\n".join(["{broken", *lines[1:]]) + "\n")
    with pytest.raises(CheckpointError, match="metrics.jsonl line 1"):
        runs.read_metrics(d)
    (d / "config.json").write_text('{"kind": "SupervisedFFConfig", ')
    with pytest.raises(CheckpointError, match="config.json"):
        evaluate_run(str(d))
    (d / "config.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="not a config"):
        evaluate_run(str(d))


def test_save_load_round_trip_identical_predictions(tmp_path, tiny_mnist):
    res = fit(small_cfg(epochs=1), str(tmp_path / "r"), progress=False, log=lambda s: None)
    again = evaluate_run(str(tmp_path / "r"))
    assert again["error_goodness"] == res["test_error_goodness"]
    assert again["error_onepass"] == res["test_error_onepass"]


def test_checkpoint_loads_without_code_and_rejects_damage(tmp_path, tiny_mnist):
    fit(small_cfg(epochs=1), str(tmp_path / "r"), progress=False, log=lambda s: None)
    state = torch.load(tmp_path / "r" / "state.pt", weights_only=True)  # no pickled code needed
    assert state["epoch"] == 1
    (tmp_path / "r" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        evaluate_run(str(tmp_path / "r"))
    with pytest.raises(CheckpointError, match="not a run folder"):
        evaluate_run(str(tmp_path / "nothing"))


def test_bp_baseline_same_harness(tmp_path, tiny_mnist):
    cfg = apply_overrides(BPConfig(), dict(hidden=(32,), epochs=2, batch_size=50, train_eval_size=100, threads=1))
    res = fit(cfg, str(tmp_path / "bp"), progress=False, log=lambda s: None)
    assert res["test_error"] < 0.2
    assert (tmp_path / "bp" / "model.safetensors").exists()


def test_overrides_type_checked():
    cfg = apply_overrides(SupervisedFFConfig(), ["hidden=10,20", "lr=0.5", "per_label_eval=false", "threshold=none"])
    assert cfg.hidden == (10, 20) and cfg.lr == 0.5 and cfg.per_label_eval is False and cfg.threshold is None
    assert apply_overrides(cfg, ["hidden=2000x4"]).hidden == (2000,) * 4
    with pytest.raises(ConfigError, match="unknown config key 'lr_rate'.*valid keys:.*lr"):
        apply_overrides(cfg, ["lr_rate=1"])
    with pytest.raises(ConfigError, match="epochs='ten': expected int"):
        apply_overrides(cfg, ["epochs=ten"])
    with pytest.raises(ConfigError, match="not of the form key=value"):
        apply_overrides(cfg, ["epochs"])


@pytest.mark.parametrize("override, says", [
    ("batch_size=0", "batch_size=0: must be >= 1"), ("batch_size=-5", "batch_size=-5: must be >= 1"),
    ("epochs=0", "epochs=0: must be >= 1"), ("eval_every=0", "eval_every=0: must be >= 1"),
    ("hidden=100,0", r"hidden=\(100, 0\): must be >= 1"), ("lr=-1", "lr=-1.0: must be >= 0"),
    ("train_subset=-1", "train_subset=-1: must be >= 0"), ("threads=-1", "threads=-1: must be >= 0"),
    ("momentum=1", r"momentum=1.0: must be in \[0, 1\)"), ("threshold=nan", "threshold=nan: must be a finite"),
    ("lr=inf", "lr=inf: must be a finite")])
def test_out_of_range_values_are_clear_errors(override, says):
    """Before the range check these failed deep inside torch or the loop (batch_size=0,
    eval_every=0, lr=-1, threads=-1, hidden with a 0) or trained on nothing without a word
    (batch_size=-5, train_subset=-1)."""
    with pytest.raises(ConfigError, match=says):
        apply_overrides(SupervisedFFConfig(), [override])


@pytest.mark.parametrize("override, says", [
    ("goodness=foo", "SupervisedFFConfig: unknown goodness 'foo'"),
    ("block_size=7", "block_size=7 must divide"),
    ("device=tpu", "device='tpu': choose auto, cpu, cuda or cuda:N")])
def test_bad_values_found_when_the_net_is_built_are_config_errors(override, says):
    """Checked by the layers (ValueError) or torch (RuntimeError), not by the config: still one
    ConfigError naming the key, which the command line prints as one line."""
    from fflab.runtime import resolve_device
    from fflab.train import build_task
    cfg = apply_overrides(SupervisedFFConfig(hidden=(40, 40)), [override])
    with pytest.raises(ConfigError, match=says):
        build_task(cfg, resolve_device(cfg.device))


def test_range_check_covers_every_config_kind_and_config_json():
    from fflab.config import to_dict
    from fflab.experiments import config_from_dict as from_dict
    from fflab.recipes import all_recipes
    for r in all_recipes().values():   # every recipe's own config is in range
        for quick in (False, True):
            r.config(quick=quick)
    d = to_dict(all_recipes()["ff-recurrent"].config())
    with pytest.raises(ConfigError, match="damping=1.5: must be in"):
        from_dict({**d, "damping": 1.5})    # a hand-edited run folder's config.json


def test_nan_loss_is_a_clear_error(tmp_path, tiny_mnist):
    from fflab.errors import TrainingDiverged
    with pytest.raises(TrainingDiverged, match="loss became (nan|inf)"):
        fit(small_cfg(epochs=1, optimizer="sgd", lr=1e30), str(tmp_path / "n"), progress=False, log=lambda s: None)


@pytest.mark.parametrize("engine, optimizer", [("autograd", "adam"), ("shared", "adam"),
                                               ("shared", "sgd")])   # shared + sgd: ProductSGD
def test_engines_train_like_analytic(tmp_path, tiny_mnist, engine, optimizer):
    ref = fit(small_cfg(epochs=1, engine="analytic", optimizer=optimizer), str(tmp_path / "a"), progress=False,
              log=lambda s: None)
    other = fit(small_cfg(epochs=1, engine=engine, optimizer=optimizer), str(tmp_path / engine), progress=False,
                log=lambda s: None)
    la = runs.read_metrics(tmp_path / "a")[-1]["train_loss"]
    lb = runs.read_metrics(tmp_path / engine)[-1]["train_loss"]
    assert lb == pytest.approx(la, rel=1e-3)
    assert abs(other["test_error_goodness"] - ref["test_error_goodness"]) <= 0.02


@pytest.mark.parametrize("momentum", [0.9, 0.0])
def test_fused_fp32_sgd_steps_through_product_sgd_when_it_can(momentum):
    """Momentum SGD takes its weight gradients as products (update.ProductSGD); without momentum
    (nothing to fold them into) the task steps through torch's SGD instead of failing."""
    from fflab import train
    from fflab._engines import update
    task = train.build_task(small_cfg(engine="shared", optimizer="sgd", momentum=momentum), torch.device("cpu"))
    calls = []
    real = update.ProductSGD.step
    update.ProductSGD.step = lambda self, grads: (calls.append(len(grads)), real(self, grads))[1]
    try:
        g = torch.Generator().manual_seed(0)
        for _ in range(2):
            loss = task.step(torch.rand(8, 784), torch.randint(0, 10, (8,)), g)
    finally:
        update.ProductSGD.step = real
    assert torch.isfinite(loss)
    assert calls == ([4, 4] if momentum else [])


def test_bf16_runs(tmp_path, tiny_mnist):
    for engine in ("analytic", "shared", "autograd"):
        res = fit(small_cfg(epochs=1, dtype="bfloat16", engine=engine), str(tmp_path / engine),
                  progress=False, log=lambda s: None)
        assert res["test_error_onepass"] < 0.5


def test_resume_of_finished_run_is_a_clear_error(tmp_path, tiny_mnist):
    fit(small_cfg(epochs=1), str(tmp_path / "r"), progress=False, log=lambda s: None)
    with pytest.raises(CheckpointError, match="already finished"):
        fit(small_cfg(epochs=1), str(tmp_path / "r"), resume=True, progress=False, log=lambda s: None)


@pytest.mark.parametrize("engine", ["shared", "analytic", "autograd"])
def test_neutral_every_skips_the_neutral_pass_and_uses_cached_probabilities(engine, monkeypatch):
    from fflab import train
    from fflab.experiments import supervised
    cfg = small_cfg(neutral_every=3, engine=engine)
    task = train.build_task(cfg, torch.device("cpu"))
    head = task.modules["head"]
    seen = []
    real = supervised.hard_wrong_labels
    monkeypatch.setattr(supervised, "hard_wrong_labels",
                        lambda p, y, generator: seen.append(p.clone()) or real(p, y, generator=generator))
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(6, 784), torch.arange(6) % 10
    idx = torch.arange(6)
    changed = []
    for _ in range(4):
        before = head.linear.weight.clone()
        task.step(x, y, g, idx)
        changed.append(not torch.equal(before, head.linear.weight))
    # the head learns only on neutral steps (1st and 4th); the others reuse the 1st step's probabilities
    assert changed == [True, False, False, True]
    assert torch.equal(seen[1], seen[0]) and torch.equal(seen[2], seen[0])
    assert not torch.equal(seen[3], seen[0])   # refreshed by the 4th (neutral) step
    # images never in a neutral step draw from uniform probabilities
    assert torch.allclose(task.get_state()["neg_probs"][:6], seen[3])


def test_neutral_every_must_be_positive():
    from fflab import train
    with pytest.raises(ConfigError, match="neutral_every"):
        train.build_task(small_cfg(neutral_every=0), torch.device("cpu"))


def test_sgd_is_fused_and_keeps_the_official_smoothing():
    """make_optimizer's SGD uses torch's fused kernel (one pass per tensor) and still computes
    the official update from the first step on: buffer = 0.9 buffer + 0.1 (grad + wd w), starting
    at 0 (torch's own first step would copy the gradient in undamped: a 10 x larger step),
    w -= lr buffer."""
    from fflab.optim import make_optimizer
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = make_optimizer([w], name="sgd", lr=0.5, momentum=0.9, weight_decay=0.1)
    assert opt.param_groups[0]["fused"]
    buf, ref = torch.zeros(2), w.detach().clone()
    for grad in (torch.tensor([1.0, 2.0]), torch.tensor([-3.0, 0.5])):
        w.grad = grad.clone()
        opt.step()
        buf = 0.9 * buf + 0.1 * (grad + 0.1 * ref)
        ref = ref - 0.5 * buf
        assert torch.allclose(w.detach(), ref)
    # without momentum there is no average to start
    v = torch.nn.Parameter(torch.ones(2))
    plain = make_optimizer([v], name="sgd", lr=0.5, momentum=0.0, weight_decay=0.0)
    v.grad = torch.ones(2)
    plain.step()
    assert torch.allclose(v.detach(), torch.full((2,), 0.5))


def test_compile_needs_the_fused_engine():
    from fflab import train
    with pytest.raises(ConfigError, match="compile=true applies to engine=shared"):
        train.build_task(small_cfg(compile="true", engine="analytic"), torch.device("cpu"))


def test_compile_without_a_cxx_compiler_is_a_clear_error(monkeypatch):
    from fflab import train
    from fflab._engines import compiled
    monkeypatch.setattr(compiled.shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match="C\\+\\+ compiler"):
        train.build_task(small_cfg(compile="true", engine="shared"), torch.device("cpu"))


@pytest.mark.parametrize("native", [False, True])
def test_bf16_on_a_cpu_without_native_bf16_warns(native, monkeypatch, recwarn):
    """An AVX2-only CPU runs bf16 products 10-80 x slower than fp32: building such a run says so
    (and only then: fp32, or a CPU with native bf16, builds quietly)."""
    from fflab._engines import products
    from fflab.errors import SlowDtypeWarning
    from fflab.train import build_task
    monkeypatch.setattr(products, "NATIVE_BF16", native)
    cpu = torch.device("cpu")
    build_task(SupervisedFFConfig(hidden=(8, 8), dtype="float32"), cpu)
    assert not [w for w in recwarn if w.category is SlowDtypeWarning]
    if native:
        build_task(SupervisedFFConfig(hidden=(8, 8), dtype="bfloat16"), cpu)
        assert not [w for w in recwarn if w.category is SlowDtypeWarning]
    else:
        with pytest.warns(SlowDtypeWarning, match="dtype=bfloat16 on a CPU without native bf16"):
            build_task(SupervisedFFConfig(hidden=(8, 8), dtype="bfloat16"), cpu)


def test_engine_auto_is_the_shared_engine_where_the_net_allows_it():
    """engine=auto picks the fastest engine that supports the net: shared for dense layers
    (BENCHMARKS.md), autograd for layers the analytic engines do not
    differentiate (here local receptive fields)."""
    from fflab._engines.supervised import choose_engine
    from fflab.local import FFLocal
    from fflab.nets import FFNet
    dense = FFNet.dense(784, [8, 8])
    assert choose_engine("auto", dense) == "shared"
    assert choose_engine("analytic", dense) == "analytic"
    other = FFNet([FFLocal((1, 28, 28), units_per_location=2, patch=5, stride=5)])   # local receptive fields
    assert choose_engine("auto", other) == "autograd"
    with pytest.raises(ConfigError, match="engine=shared needs dense layers"):
        choose_engine("shared", other)
    with pytest.raises(ConfigError, match="choose auto, shared, analytic or autograd"):
        choose_engine("fast", dense)


@pytest.mark.parametrize("native", [False, True])
def test_dtype_auto_is_bf16_only_where_the_device_has_it(native, monkeypatch, tmp_path, tiny_mnist):
    """dtype=auto runs bf16 products on a device that multiplies bf16 natively and fp32 elsewhere
    (where bf16 is 10-80 x slower); the run folder records the dtype it used, so that a resume on
    another machine continues it alike."""
    from fflab._engines import products
    from fflab.runtime import concrete_dtype
    # what the device can do, as dtype=auto sees it (the products keep this CPU's real paths)
    monkeypatch.setattr(products, "native_bf16", lambda device: native)
    cpu = torch.device("cpu")
    want = "bfloat16" if native else "float32"
    assert concrete_dtype("auto", cpu) == want
    assert concrete_dtype("float32", cpu) == "float32" and concrete_dtype("bfloat16", cpu) == "bfloat16"
    said = []
    res = fit(small_cfg(epochs=1, dtype="auto"), str(tmp_path / "r"), progress=False, log=said.append)
    assert said[0] == f"dtype auto -> {want} ({'' if native else 'no '}native bf16 on cpu)"
    assert json.loads((tmp_path / "r" / "config.json").read_text())["dtype"] == want
    assert res["dtype"] == want


def test_unknown_dtype_is_a_config_error():
    from fflab.train import build_task
    with pytest.raises(ConfigError, match="dtype='fp16': choose float32, bfloat16, auto"):
        build_task(small_cfg(dtype="fp16"), torch.device("cpu"))
