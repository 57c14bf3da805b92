"""Interleaved A/B timing of supervised-FF training options in one process.

    python benchmarks/engine_ab.py --dtype float32 optimizer=adam optimizer=adam,compile=true \
        optimizer=sgd optimizer=sgd,compile=true

Each positional argument is one variant: comma-separated config overrides on top of the base
(``--hidden``, batch 100, ``engine=shared``, ``compile=false``, ``neutral_every=4``,
``--dtype``). All variants are built in one process and timed in turns, ``--steps`` training
steps each, ``--rounds`` times, so that the machine's slow and fast periods (a shared 2-core
machine's speed drifts within minutes) fall on every variant alike; ``fflab bench`` runs one
variant per process and cannot cancel that drift. Prints the median, first quartile and minimum
ms per step of each variant. Random MNIST-shaped data; compilation and warm-up excluded. Not a
test: nothing is asserted.

Three pseudo-overrides are not config keys:

- ``update=plain`` builds the variant without the engine's own optimizer step
  (``update.CompiledUpdate``, which ``compile=true`` uses with bf16, and ``update.ProductSGD``,
  which fp32 SGD uses), i.e. with torch's own optimizer step (``fused=True``; and per-step
  weight casts in bf16), to measure what they buy:

    python benchmarks/engine_ab.py --dtype bfloat16 optimizer=adam,compile=true,update=plain \
        optimizer=adam,compile=true

- ``linear=addmm`` times the variant's turns inside ``products.use_onednn(False)``, i.e. with
  the forward products through ``torch.addmm`` instead of oneDNN's linear:

    python benchmarks/engine_ab.py optimizer=sgd,compile=true,linear=addmm optimizer=sgd,compile=true

- ``head=autograd`` builds a ``compile=true`` variant whose neutral pass runs eager and whose
  softmax head learns through autograd, instead of ``supervised.neutral_head_grads`` compiled:

    python benchmarks/engine_ab.py optimizer=sgd,compile=true,head=autograd optimizer=sgd,compile=true

One variant is not fflab at all: ``reference`` times ``benchmarks/reference_ff.py``, a model of
the reimplementation against which fflab's "3 x faster per epoch" speed target is set, built
for ``--hidden`` (its optimizer and dtype are its own, fp32 SGD). Put it first to read fflab's
speed-up over it on this machine from the paired ratios:

    python benchmarks/engine_ab.py reference optimizer=sgd,compile=true optimizer=adam

Besides each variant's own statistics it prints, for every variant after the first, the paired
difference from the first: the median and quartiles over rounds of (this variant's turn minus
the first variant's turn in the same round), and the paired ratio (the first variant's turn
divided by this one's: how many times faster this variant is). On a machine whose speed drifts,
that is steadier than the difference of the two medians. ``--hidden 16x3`` times a net whose
step is almost all per-step overhead.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch

import reference_ff  # benchmarks/, beside this script
from fflab._engines import products
from fflab._engines.supervised import SupervisedEngine
from fflab.bench import training_loop
from fflab.config import _expand_times, apply_overrides
from fflab.experiments.supervised import SupervisedFFConfig

PSEUDO = ("update=plain", "linear=addmm", "head=autograd")


def without_own_parts(engine: SupervisedEngine, overrides: list[str]) -> None:
    """``update=plain`` and ``head=autograd`` on a built engine, before its first step: the net's
    optimizer step through ``opt.step()``, the head's gradient through autograd."""
    engine.use_plain(update="update=plain" in overrides, head="head=autograd" in overrides)


def with_addmm(run: Callable[[], None]) -> Callable[[], None]:
    """``run`` with the forward products through ``torch.addmm`` (``linear=addmm``)."""
    def wrapped() -> None:
        with products.use_onednn(False):
            run()
    return wrapped


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variants", nargs="+",
                    help="comma-separated overrides per variant, e.g. optimizer=sgd,compile=true")
    ap.add_argument("--hidden", default="1000x3")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20, help="steps per timed turn")
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    base = {"hidden": tuple(int(h) for h in _expand_times(args.hidden)), "batch_size": 100, "engine": "shared",
            "compile": "false", "neutral_every": 4, "dtype": args.dtype, "device": "cpu"}
    print(f"torch {torch.__version__}, {args.threads} threads, {platform.processor() or platform.machine()}, "
          f"hidden {args.hidden}, batch 100, {args.dtype}, engine shared, neutral_every 4, "
          f"{args.rounds} rounds x {args.steps} steps")

    runs = []   # each variant's task running --steps steps on synthetic MNIST-shaped data (as fflab bench)
    for variant in args.variants:
        if variant == "reference":
            runs.append(reference_ff.training_loop(args.steps, base["hidden"])[1])
            continue
        overrides = variant.split(",")
        cfg = apply_overrides(apply_overrides(SupervisedFFConfig(), base), [o for o in overrides if o not in PSEUDO])
        task, run = training_loop(cfg, args.steps)
        without_own_parts(task.engine, overrides)
        runs.append(with_addmm(run) if "linear=addmm" in overrides else run)

    def turn(run) -> float:
        start = time.perf_counter()
        run()
        return (time.perf_counter() - start) / args.steps * 1e3

    for run in runs:   # warm-up, and compilation where asked for
        turn(run)
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(args.rounds):
        for t, run in zip(times, runs):
            t.append(turn(run))
    for variant, t in zip(args.variants, times):
        t = sorted(t)
        print(f"{variant:40s} ms/step median {statistics.median(t):6.2f}  q1 {t[len(t) // 4]:6.2f}  min {t[0]:6.2f}"
              f"  -> {statistics.median(t) * 500 / 1e3:5.2f} s per 50k-image epoch")
    for variant, t in zip(args.variants[1:], times[1:]):   # paired with the first variant, round by round
        d = sorted(b - a for a, b in zip(times[0], t))
        r = sorted(a / b for a, b in zip(times[0], t))
        print(f"{variant:40s} minus {args.variants[0]}: paired median {statistics.median(d):+6.2f} ms/step, "
              f"quartiles {d[len(d) // 4]:+6.2f} / {d[(3 * len(d)) // 4]:+6.2f}; "
              f"{statistics.median(r):.2f} x as fast (quartiles {r[len(r) // 4]:.2f} / {r[(3 * len(r)) // 4]:.2f})")


if __name__ == "__main__":
    main()
