"""Speed benchmark: FF training against the machine's own matmul throughput (paper section 2).

FF's cost is almost all dense products: per training image, a neutral pass (for the one-pass
head and hard negatives), a positive and a negative pass, and one weight-gradient product per
layer for each of the two. No input gradient is needed because nothing crosses a layer. We count
exactly these products ("needed FLOPs") and compare the achieved rate with the raw products of
the same shapes, made with the calls the engine makes (``products.linear`` forward, ``torch.mm``
weight gradients), so the ratio measures the engine and not the choice of library. Warm-up is
excluded; each measurement is repeated and we report median and spread. The raw products, the
FF steps and the BP steps are timed in turns, and each ratio (FF / raw, FF / BP) is the median
over turns of the two rates measured side by side, which a machine whose speed drifts cannot
skew the way two medians taken minutes apart can.
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from . import runtime
from ._engines import products
from .errors import ConfigError
from .experiments.backprop import BPConfig
from .experiments.supervised import SupervisedFFConfig, predict
from .runtime import Runtime
from .task import MNIST_SHAPE, DataShape
from .train import build_task


def _sync(device: torch.device | None) -> None:
    """Wait for the device's queued work: a CUDA call returns when its kernels are queued, not
    done, so a timer read without this measures the launches."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def _timeit(fn: Callable[[], Any], *, reps: int, warmup: int = 1,
            device: torch.device | None = None) -> list[float]:
    """Seconds per call of ``fn``, ``reps`` times after ``warmup`` calls, each call's work
    finished on ``device`` before the timer is read."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(reps):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        out.append(time.perf_counter() - t)
    return out


def _interleaved(fns: dict[str, Callable[[], Any]], *, reps: int,
                 device: torch.device | None = None) -> dict[str, list[float]]:
    """Seconds per call of each of ``fns``, timed in turns (a, b, a, b, ...) after one warm-up
    call each, so that the machine's slow and fast periods (a shared machine drifts by 10-50%
    within minutes) fall on every function alike and the i-th times of two functions can be
    paired."""
    for fn in fns.values():
        fn()
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            out[k] += _timeit(fn, reps=1, warmup=0, device=device)
    return out


def _summary(times: list[float], scale: float) -> dict[str, float]:
    """``scale / time`` statistics: median and (min, max) spread over repetitions."""
    rates = [scale / t for t in times]
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates)}


def forward_macs(sizes: list[int]) -> int:
    """Multiply-adds of one forward pass of one image through a dense stack."""
    return sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


def ff_flops_per_image(sizes: list[int], *, engine: str, neutral_every: int) -> float:
    """The products supervised FF needs per training image: the neutral pass (on 1 step in
    ``neutral_every``), the positive and negative passes, and one weight gradient for each of the
    two (no input gradient: nothing crosses a layer). The shared engine makes the first layer's
    image product once forward and once for its update."""
    macs, first = forward_macs(sizes), sizes[0] * sizes[1]
    per_layer = 4 + 1 / neutral_every
    return 2 * (per_layer * macs if engine != "shared" else 2 * first + per_layer * (macs - first))


def matmul_throughput(sizes: list[int], batch: int, dtype: torch.dtype, *, reps: int, iters: int = 5,
                      device: torch.device | str = "cpu") -> dict[str, float]:
    """GFLOP/s of the raw products FF needs for this net at this batch on ``device``: forward
    x @ W^T on the positive+negative batch (``products.linear``, as the engine calls it) and the
    weight gradient dz^T @ x, for every layer."""
    device = torch.device(device)
    run, flops = raw_products(sizes, batch, dtype, iters=iters, device=device)
    return _summary(_timeit(run, reps=reps, device=device), flops / 1e9)


def raw_products(sizes: list[int], batch: int, dtype: torch.dtype, *, iters: int = 5,
                 device: torch.device) -> tuple[Callable[[], None], int]:
    """A function making ``matmul_throughput``'s products ``iters`` times, and their FLOPs."""
    mats = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        x = torch.randn(2 * batch, a, dtype=dtype, device=device)
        w = torch.randn(b, a, dtype=dtype, device=device)
        dz = torch.randn(2 * batch, b, dtype=dtype, device=device)
        mats.append((x, w, dz))
    flops = iters * sum(2 * 2 * (2 * batch) * w.shape[0] * w.shape[1] for _, w, _ in mats)

    def run() -> None:
        for _ in range(iters):
            for x, w, dz in mats:
                products.linear(x, w, None)
                torch.mm(dz.t(), x)

    return run, flops


# The image shape of each dataset a recipe may name (bench makes synthetic data of that shape).
DATASET_SHAPES = {"mnist": MNIST_SHAPE, "fashion_mnist": MNIST_SHAPE, "cifar10": DataShape((3, 32, 32), 10)}


def _synthetic(n: int, device: torch.device, shape: DataShape = MNIST_SHAPE) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(n, shape.in_features, generator=g) > 0.8).float()
    y = torch.randint(0, shape.num_classes, (n,), generator=g)
    return x.to(device), y.to(device)


def training_loop(cfg: Any, steps: int, rt: Runtime | None = None,
                  shape: DataShape = MNIST_SHAPE) -> tuple[Any, Callable[[], None]]:
    """A task of ``cfg`` on ``rt`` (None: resolved from the config) and a function running
    ``steps`` training steps on synthetic data of ``shape`` (MNIST's by default)."""
    rt = rt or runtime.resolve(cfg, set_threads=False)
    device = rt.device
    task = build_task(cfg, rt, shape)
    task.train(True)
    b = cfg.batch_size
    x, y = _synthetic(steps * b, device, shape)
    if task.setup is not None:
        # as fit does: sizes the per-image caches (neutral_every > 1) to the data once, instead
        # of from each batch's indices, a host read of idx.max() on every step
        task.setup({"x_train": x, "y_train": y})
    idx = torch.arange(steps * b, device=device)   # training-set indices (per-image caches)
    g = torch.Generator(device=device).manual_seed(0)

    def run() -> None:
        for i in range(steps):
            sl = slice(i * b, (i + 1) * b)
            task.step(x[sl], y[sl], g, idx[sl])
        _sync(device)   # the steps done, not just queued, when a caller reads its timer

    return task, run


def update_cost_ms(cfg: Any, *, steps: int, reps: int, rt: Runtime | None = None) -> float:
    """What the optimizer updates cost per step *in place*: the median over repetitions of
    (time of ``steps`` full steps - time of the same steps inside the engine's
    ``without_update()``) / steps, in ms. The two kinds alternate on one task so that the
    machine's drift cancels in each pair. In place matters: the updates' passes over weights,
    gradients and optimizer state also evict the products' operands from cache, which timing
    ``opt.step()`` alone would miss."""
    task, run = training_loop(cfg, steps, rt)

    def no_update() -> None:
        with task.engine.without_update():
            run()

    run()   # warm-up (and compilation, if any)
    diffs = []
    for _ in range(reps):
        full, skipped = _timeit(run, reps=1, warmup=0)[0], _timeit(no_update, reps=1, warmup=0)[0]
        diffs.append((full - skipped) / steps * 1e3)
    return statistics.median(diffs)


def eval_throughput(cfg: SupervisedFFConfig, *, n: int, reps: int,
                    rt: Runtime | None = None) -> dict[str, dict[str, float]]:
    rt = rt or runtime.resolve(cfg, set_threads=False)
    device = rt.device
    task = build_task(cfg, rt)
    task.train(False)
    net, head = task.modules["net"], task.modules["head"]
    layers = list(range(cfg.eval_from_layer, len(cfg.hidden)))
    x, _ = _synthetic(n, device)
    out = {}
    for name, per_label, h in (("per_label", True, None), ("one_pass", False, head)):
        def run(h=h, per_label=per_label) -> None:
            predict(net, h, x, layers=layers, per_label=per_label, rt=rt)
        out[name] = _summary(_timeit(run, reps=reps, device=device), n)
    return out


def run_benchmark(hidden: tuple[int, ...] = (1000, 1000, 1000), *, batch_size: int = 100,
                  dtype: str = "float32", negatives: str = "hard", steps: int = 30, reps: int = 5,
                  device: str = "auto", engine: str = "auto", neutral_every: int = 1,
                  optimizer: str = "adam", compile: bool = False,
                  epoch_images: int = 60000) -> dict[str, Any]:
    """The five measurements (a)-(e) for one network, denormals flushed as in training;
    returns a JSON-able dict."""
    with runtime.flush_denormals():
        return _run_benchmark(hidden, batch_size=batch_size, dtype=dtype, negatives=negatives, steps=steps,
                              reps=reps, device=device, engine=engine, neutral_every=neutral_every,
                              optimizer=optimizer, compile=compile, epoch_images=epoch_images)


def _run_benchmark(hidden: tuple[int, ...], *, batch_size: int, dtype: str, negatives: str, steps: int,
                   reps: int, device: str, engine: str, neutral_every: int, optimizer: str, compile: bool,
                   epoch_images: int) -> dict[str, Any]:
    from .runs import environment
    sizes = [784, *hidden]
    macs = forward_macs(sizes)
    ff_cfg = SupervisedFFConfig(hidden=hidden, batch_size=batch_size, dtype=dtype, negatives=negatives,
                                device=device, engine=engine, neutral_every=neutral_every,
                                optimizer=optimizer, compile="true" if compile else "false")
    rt = runtime.resolve(ff_cfg, set_threads=False)   # dtype=auto: what a run here would use
    dev, dtype = rt.device, rt.dtype
    ff_cfg = dataclasses.replace(ff_cfg, dtype=dtype)
    bp_cfg = BPConfig(hidden=hidden, batch_size=batch_size, dtype=dtype, device=device, optimizer=optimizer)
    res: dict[str, Any] = {"env": environment(), "hidden": list(hidden), "batch_size": batch_size,
                           "dtype": dtype, "negatives": negatives, "engine": engine, "neutral_every": neutral_every,
                           "optimizer": optimizer, "compile": compile, "steps": steps, "reps": reps,
                           # which library the FF forward products (and the raw reference) used
                           "forward_products": (f"oneDNN linear from {products.MIN_ONEDNN_MACS} multiply-adds up"
                                                if products.onednn_active() and dev.type == "cpu"
                                                else "torch.addmm")}
    # (a), (b) and (d) in turns, rep by rep, so that the ratios (c) and FF / BP pair rates
    # measured side by side: on a shared machine, two medians taken minutes apart can disagree
    # by 2 x for one configuration.
    task, ff_run = training_loop(ff_cfg, steps, rt)
    res["engine"] = task.info.get("engine", engine)   # what engine=auto resolved to
    res["engine_requested"] = engine
    raw_run, raw_flops = raw_products(sizes, batch_size, getattr(torch, dtype), device=dev)
    _, bp_run = training_loop(bp_cfg, steps, rt)
    times = _interleaved({"raw": raw_run, "ff": ff_run, "bp": bp_run}, reps=reps, device=dev)
    other = "bfloat16" if dtype == "float32" else "float32"
    res["matmul_gflops"] = {dtype: _summary(times["raw"], raw_flops / 1e9),
                            other: matmul_throughput(sizes, batch_size, getattr(torch, other), reps=reps,
                                                     device=dev)}
    ff = _summary(times["ff"], steps * batch_size)
    flops_per_image = ff_flops_per_image(sizes, engine=res["engine"], neutral_every=neutral_every)
    res["ff_train"] = {"images_per_s": ff, "ms_per_epoch": epoch_images / ff["median"] * 1e3,
                       "gflops": ff["median"] * flops_per_image / 1e9,
                       "flops_per_image": flops_per_image}
    raw = res["matmul_gflops"][dtype]["median"]
    # FF's rate over the raw rate of the same turn: steps * batch * flops_per_image / t_ff against
    # raw_flops / t_raw
    res["ff_fraction_of_matmul_paired"] = _summary(
        [t_ff / t_raw for t_ff, t_raw in zip(times["ff"], times["raw"])],
        steps * batch_size * flops_per_image / raw_flops)
    res["ff_fraction_of_matmul"] = res["ff_fraction_of_matmul_paired"]["median"]
    # Where a step's time goes: the needed products at the raw rate (a floor), the optimizer
    # updates (measured in place), and the rest (elementwise work, sampling, dispatch).
    step_ms = batch_size / ff["median"] * 1e3
    products_ms = batch_size * flops_per_image / (raw * 1e9) * 1e3
    update_ms = update_cost_ms(ff_cfg, steps=steps, reps=reps, rt=rt)
    res["ff_step_ms"] = {"total": step_ms, "products_at_raw_rate": products_ms, "optimizer_update": update_ms,
                         "rest": step_ms - products_ms - update_ms}
    bp = _summary(times["bp"], steps * batch_size)
    bp_flops_per_image = 2 * (macs + 10 * hidden[-1]) * 3  # forward, input grad, weight grad
    res["bp_train"] = {"images_per_s": bp, "ms_per_epoch": epoch_images / bp["median"] * 1e3,
                       "gflops": bp["median"] * bp_flops_per_image / 1e9}
    # FF's time over BP's in the same turn (the same steps and batch)
    res["ff_over_bp_paired"] = _summary([t_bp / t_ff for t_ff, t_bp in zip(times["ff"], times["bp"])], 1.0)
    res["ff_over_bp_time_per_epoch"] = res["ff_over_bp_paired"]["median"]
    res["eval_images_per_s"] = eval_throughput(ff_cfg, n=2000, reps=max(2, reps // 2), rt=rt)
    return res


def format_table(res: dict[str, Any]) -> str:
    env = res["env"]
    mm = res["matmul_gflops"]
    f = res["ff_train"]
    b = res["bp_train"]
    ev = res["eval_images_per_s"]

    def spread(d: dict[str, float], fmt: str = "{:.0f}") -> str:
        return f"{fmt.format(d['median'])} [{fmt.format(d['min'])}-{fmt.format(d['max'])}]"

    rows = [
        f"fflab bench: hidden {res['hidden']} batch {res['batch_size']} dtype {res['dtype']} "
        f"negatives {res['negatives']} engine {res['engine']}"
        + (f" ({res['engine_requested']})" if res["engine_requested"] != res["engine"] else "")
        + f" neutral_every {res.get('neutral_every', 1)} "
        f"optimizer {res.get('optimizer', 'adam')} compile {res.get('compile', False)} "
        f"({res['steps']} steps x {res['reps']} reps, median [min-max])",
        f"hardware: {env['cpu']} ({env.get('cpu_capability', '?')}"
        + ("" if env.get("native_bf16", True) else ", no native bf16: bf16 products run a slow fallback")
        + f") | {env['cpu_count']} CPUs, {env['torch_threads']} torch threads"
        + (f" | GPU {env['gpu']}" if env.get("gpu") else ""),
        f"versions: torch {env['torch']}, python {env['python']}, fflab {env['fflab']}"
        + (f" | FF forward products: {res['forward_products']}" if "forward_products" in res else ""),
        "",
        f"{'measurement':44s} {'value':>28s}",
        f"{'(a) raw matmul fp32, FF shapes (GFLOP/s)':44s} {spread(mm['float32']):>28s}",
        f"{'(a) raw matmul bf16, FF shapes (GFLOP/s)':44s} {spread(mm['bfloat16']):>28s}",
        f"{'(b) FF train (images/s)':44s} {spread(f['images_per_s']):>28s}",
        f"{'(b) FF train (ms per 60k-image epoch)':44s} {f['ms_per_epoch']:>28.0f}",
        f"{'(b) FF train (GFLOP/s of needed products)':44s} {f['gflops']:>28.1f}",
        f"{'(c) FF / raw matmul ' + res['dtype'] + ', paired turns (%)':44s} "
        f"{spread({k: 100 * v for k, v in res['ff_fraction_of_matmul_paired'].items()}):>28s}",
        *([f"{'(c) FF step (ms): ' + k.replace('_', ' '):44s} {v:>28.2f}" for k, v in res["ff_step_ms"].items()]
          if "ff_step_ms" in res else []),
        f"{'(d) BP train (images/s)':44s} {spread(b['images_per_s']):>28s}",
        f"{'(d) BP train (ms per 60k-image epoch)':44s} {b['ms_per_epoch']:>28.0f}",
        f"{'(d) FF / BP time per epoch, paired turns':44s} {spread(res['ff_over_bp_paired'], '{:.2f}'):>28s}",
        f"{'(e) eval per-label goodness (images/s)':44s} {spread(ev['per_label']):>28s}",
        f"{'(e) eval one-pass softmax (images/s)':44s} {spread(ev['one_pass']):>28s}",
    ]
    return "\n".join(rows)


def recipe_step_time(cfg: Any, *, steps: int, reps: int, epoch_images: int | None = None) -> dict[str, Any]:
    """Training speed of any image recipe's config (``fflab bench --recipe``): ms per step,
    images/s and minutes per epoch (of ``epoch_images``, default the dataset's training set), on
    synthetic data of the recipe's image shape, denormals flushed as in training."""
    from .experiments import kind_of
    from .runs import environment
    if not kind_of(cfg).images or cfg.dataset not in DATASET_SHAPES:
        raise ConfigError(f"bench --recipe times image recipes on {', '.join(DATASET_SHAPES)}; "
                          f"this one reads dataset={cfg.dataset!r}")
    shape = DATASET_SHAPES[cfg.dataset]
    epoch_images = epoch_images or (50000 if cfg.dataset == "cifar10" else 60000)
    with runtime.flush_denormals():
        rt = runtime.resolve(cfg, set_threads=False)
        task, run = training_loop(cfg, steps, rt, shape)
        times = _timeit(run, reps=reps, device=rt.device)
        per_step = statistics.median(times) / steps
        return {"env": environment(), "config": type(cfg).__name__, "dtype": rt.dtype, "steps": steps,
                "reps": reps, "batch_size": cfg.batch_size, "image_shape": list(shape.image_shape),
                "ms_per_step": {"median": per_step * 1e3, "min": min(times) / steps * 1e3,
                                "max": max(times) / steps * 1e3},
                "images_per_s": cfg.batch_size / per_step,
                "minutes_per_epoch": epoch_images / cfg.batch_size * per_step / 60,
                "epoch_images": epoch_images, **task.info}

