import json

import pytest

from fflab._engines import products
from fflab.bench import format_table, run_benchmark


def test_bench_reports_every_measurement_and_counts_skipped_neutral_passes():
    kw = dict(hidden=(16, 16), batch_size=8, steps=2, reps=2, device="cpu", epoch_images=80)
    every = run_benchmark(**kw)   # engine=auto: the shared engine, and its products counted
    sparse = run_benchmark(**kw, neutral_every=4, engine="shared")
    assert every["engine"] == "shared" and every["engine_requested"] == "auto"
    assert "engine shared (auto)" in format_table(every)
    for res in (every, sparse):
        json.dumps(res)  # --json must be able to write it
        assert res["ff_train"]["images_per_s"]["median"] > 0 and res["bp_train"]["images_per_s"]["median"] > 0
        assert res["forward_products"].startswith("oneDNN") == products.onednn_active()
        assert res["ff_over_bp_time_per_epoch"] > 0
        assert set(res["eval_images_per_s"]) == {"per_label", "one_pass"}
        parts = res["ff_step_ms"]   # where a step's time goes; the parts add up to the step
        assert parts["total"] > 0 and parts["products_at_raw_rate"] > 0
        assert parts["total"] == pytest.approx(
            parts["products_at_raw_rate"] + parts["optimizer_update"] + parts["rest"])
        paired = res["ff_fraction_of_matmul_paired"]   # per turn: FF rate over the raw rate beside it
        assert paired["min"] <= res["ff_fraction_of_matmul"] == paired["median"] <= paired["max"]
        assert set(res["matmul_gflops"]) == {"float32", "bfloat16"}
        fb = res["ff_over_bp_paired"]
        assert fb["min"] <= res["ff_over_bp_time_per_epoch"] == fb["median"] <= fb["max"]
    # a neutral pass on 1 step in 4 needs fewer products per image
    first, rest = 784 * 16, 16 * 16
    assert every["ff_train"]["flops_per_image"] == 2 * (2 * first + 5 * rest)
    assert sparse["ff_train"]["flops_per_image"] == 2 * (2 * first + 4.25 * rest)
    assert "neutral_every 4" in format_table(sparse) and "FF forward products" in format_table(sparse)


@pytest.mark.parametrize("extra", [
    {}, {"engine": "shared"},    # fp32 sgd: the net steps via ProductSGD
    pytest.param({"engine": "shared", "compile": "true", "dtype": "bfloat16"},   # the net steps via CompiledUpdate
                 marks=pytest.mark.needs_cxx_compiler)])
def test_update_cost_restores_the_optimizers(extra):
    from fflab.bench import update_cost_ms
    from fflab.experiments.supervised import SupervisedFFConfig
    cfg = SupervisedFFConfig(hidden=(8, 8), batch_size=4, device="cpu", optimizer="sgd", **extra)
    assert isinstance(update_cost_ms(cfg, steps=2, reps=2), float)   # and its own check passed


def test_training_loop_sizes_the_per_image_cache_as_fit_does():
    """With neutral_every > 1 the timed steps must be fit's steps: the hard-negative cache sized
    once from the data, not grown from each batch's indices (a host read of idx.max() per step,
    a sync on a GPU)."""
    from fflab.bench import training_loop
    from fflab.experiments.supervised import SupervisedFFConfig
    cfg = SupervisedFFConfig(hidden=(8, 8), batch_size=4, device="cpu", engine="shared", neutral_every=4)
    task, run = training_loop(cfg, steps=3)
    assert task.get_state()["neg_probs"].shape == (12, 10)
    run()
    assert task.get_state()["neg_probs"].shape == (12, 10)


def test_interleaved_timing_takes_turns():
    """(a) and (b) are timed in turns, so each FF turn has a raw-product turn beside it."""
    from fflab import bench
    calls = []
    times = bench._interleaved({"raw": lambda: calls.append("raw"), "ff": lambda: calls.append("ff")}, reps=3)
    assert calls == ["raw", "ff"] * 4   # one warm-up call each, then three turns
    assert [len(t) for t in times.values()] == [3, 3]


def test_timings_wait_for_the_device(monkeypatch):
    """On CUDA a call returns once its kernels are queued: each timed call is fenced by a
    synchronize on both sides (here recorded, no GPU needed); on the CPU nothing is waited for."""
    import torch

    from fflab import bench
    events = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: events.append("sync"))
    bench._timeit(lambda: events.append("call"), reps=2, device=torch.device("cuda"))
    assert events == ["call", "sync", "call", "sync", "sync", "call", "sync"]   # warm-up unfenced
    events.clear()
    bench._timeit(lambda: events.append("call"), reps=2, device=torch.device("cpu"))
    assert events == ["call"] * 3


def test_raw_products_are_made_on_the_benchmarked_device(monkeypatch):
    import torch

    from fflab import bench
    seen = []
    real = products.linear

    def recording(x, w, b, **kw):
        seen.append((x.device, w.device))
        return real(x, w, b, **kw)

    monkeypatch.setattr(products, "linear", recording)
    res = bench.matmul_throughput([784, 8, 8], 4, torch.float32, reps=1, iters=1, device="meta")
    assert res["median"] > 0
    assert seen and all(d == (torch.device("meta"),) * 2 for d in seen)


@pytest.mark.parametrize("args, says", [(["--hidden", "foo"], "hidden='foo': expected int"),
                                        (["--hidden", "0x3"], "must be >= 1"),
                                        (["--batch-size", "0"], "batch_size=0: must be >= 1"),
                                        (["--steps", "0"], "--steps and --reps >= 1")])
def test_bench_cli_bad_input_is_one_clear_line(args, says, capsys):
    from fflab.cli.main import main
    assert main(["bench", *args]) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err


def test_bench_dtype_auto_is_what_a_run_would_use(monkeypatch):
    monkeypatch.setattr(products, "native_bf16", lambda device: False)
    res = run_benchmark(hidden=(8, 8), batch_size=4, steps=1, reps=1, device="cpu", dtype="auto", epoch_images=8)
    assert res["dtype"] == "float32" and "dtype float32" in format_table(res)


def test_bench_recipe_times_any_image_recipe_on_its_own_image_shape(capsys):
    """fflab bench --recipe: the CIFAR-10 nets' step on 3 x 32 x 32 synthetic images."""
    from fflab.cli.main import main
    assert main(["bench", "--recipe", "cifar-bp-2l", "--steps", "1", "--reps", "1", "hidden_layers=1",
                 "batch_size=4", "patch=3", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "images 3x32x32" in out and "min per 50000-image epoch" in out
    assert main(["bench", "--recipe", "seq-bp"]) == 2          # not an image recipe: one clear line
    assert "image recipes" in capsys.readouterr().err
