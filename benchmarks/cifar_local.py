"""Time the CIFAR-10 locally connected nets (``fflab.experiments.local_recurrent``): one training
step at full size, per ``local_impl``, and the primitive alone.

    python benchmarks/cifar_local.py [--threads 2] [--batch 100] [--layers 2] [--steps 3] [--impls tiled,dense]
                                     [--eval 500] [--primitive]

A step of the FF net is: bottom-up pass, head, ``iterations`` damped iterations on the positive
and negative batch (2 x batch rows) with every layer's FF loss, backward, Adam. Prints the median
seconds per step (after one warm-up step) and the seconds a 50,000-image epoch would take at that
rate (training only; evaluation is extra). ``--primitive`` also times one 3x32x32 -> 3x32x32
11x11 ``LocalLinear`` product (forward + weight gradient, 200 rows) per impl, bmm included.
Denormals are flushed, as in ``fflab.train.fit``. Run it on an otherwise idle machine: with another
busy process on the same cores the 2-thread products slow down up to 10x. Not a test.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from fflab.experiments.local_recurrent import (
    CIFAR_SHAPE,
    IMPLS,
    LocalBPConfig,
    LocalLinear,
    LocalRecurrentFFConfig,
    build,
    build_bp,
)
from fflab.runtime import Runtime, flush_denormals


def time_steps(task, batch: int, steps: int) -> tuple[float, float]:
    """Median wall and process CPU seconds per step (the CPU time tells a busy machine's share)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, CIFAR_SHAPE.in_features, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    task.step(x, y, g)   # warm-up
    times, cpu = [], []
    for _ in range(steps):
        t, c = time.perf_counter(), time.process_time()
        task.step(x, y, g)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return statistics.median(times), statistics.median(cpu)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--impls", default="tiled,dense")
    ap.add_argument("--eval", type=int, default=0, help="also time evaluate() on this many images")
    ap.add_argument("--primitive", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rt = Runtime(torch.device("cpu"))
    print(f"{platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}")
    per_epoch = 50_000 / args.batch
    for impl in args.impls.split(","):
        cfg = LocalRecurrentFFConfig(hidden_layers=args.layers, iterations=args.iterations,
                                     eval_window=(1, 1), local_impl=impl, batch_size=args.batch)
        task = build(cfg, rt, CIFAR_SHAPE)
        s, c = time_steps(task, args.batch, args.steps)
        print(f"FF  {args.layers} layers, {args.iterations} iterations, impl {impl:5s}: {s:6.2f} s/step "
              f"({c:.2f} s CPU), {s * per_epoch / 60:6.1f} min per 50k-image epoch", flush=True)
        if args.eval:
            x, y = torch.rand(args.eval, CIFAR_SHAPE.in_features), torch.randint(0, 10, (args.eval,))
            t = time.perf_counter()
            task.evaluate(x, y)
            t = time.perf_counter() - t
            print(f"FF  evaluate (10 labels x {args.iterations} iterations + one-pass) on {args.eval} images: "
                  f"{t:.1f} s, {t * 10_000 / args.eval / 60:.1f} min per 10k test images", flush=True)
        bp = LocalBPConfig(hidden_layers=args.layers, local_impl=impl, batch_size=args.batch)
        s, c = time_steps(build_bp(bp, rt, CIFAR_SHAPE), args.batch, args.steps)
        print(f"BP  {args.layers} layers, impl {impl:5s}: {s:6.3f} s/step ({c:.2f} s CPU), "
              f"{s * per_epoch / 60:6.1f} min per 50k-image epoch", flush=True)
    if args.primitive:
        x = torch.rand(200, 3 * 32 * 32)
        for impl in IMPLS:
            m = LocalLinear((3, 32, 32), 3, 11, padding=5, impl=impl)
            t = []
            for _ in range(3):
                t0 = time.perf_counter()
                m(x).square().sum().backward()
                t.append(time.perf_counter() - t0)
            print(f"LocalLinear 3x32x32 -> 3x32x32, 11x11, 200 rows, impl {impl:5s}: "
                  f"{1e3 * min(t):8.1f} ms forward + weight gradient", flush=True)


if __name__ == "__main__":
    with flush_denormals():   # as fflab.train.fit runs
        main()
