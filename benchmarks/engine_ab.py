"""Interleaved A/B timing of supervised-FF training options in one process (issue 3).

    python benchmarks/engine_ab.py --dtype float32 optimizer=adam optimizer=adam,compile=true \
        optimizer=sgd optimizer=sgd,compile=true

Each positional argument is one variant: comma-separated config overrides on top of the base
(``--hidden``, batch 100, ``engine=fused``, ``neutral_every=4``, ``--dtype``). All variants are
built in one process and timed in turns, ``--steps`` training steps each, ``--rounds`` times, so
that the machine's slow and fast periods (this 2-core VM drifts by 10-20% within minutes) fall on
every variant alike; ``fflab bench`` runs one variant per process and cannot cancel that drift.
Prints the median, first quartile and minimum ms per step of each variant. Random MNIST-shaped
data; compilation and warm-up excluded. Not a test: nothing is asserted.

Two pseudo-overrides are not config keys:

- ``update=plain`` builds the variant without ``update.CompiledUpdate`` (which ``compile=true``
  uses with bf16) and without ``update.ProductSGD`` (which fp32 SGD uses), i.e. with torch's own
  fused optimizer step (and per-step weight casts in bf16), to measure what they buy:

    python benchmarks/engine_ab.py --dtype bfloat16 optimizer=adam,compile=true,update=plain \
        optimizer=adam,compile=true

- ``linear=addmm`` times the variant's turns with ``fflab.products.USE_ONEDNN`` off, i.e. with
  the forward products through ``torch.addmm`` instead of oneDNN's linear:

    python benchmarks/engine_ab.py optimizer=sgd,compile=true,linear=addmm optimizer=sgd,compile=true

- ``head=autograd`` builds a ``compile=true`` variant whose neutral pass runs eager and whose
  softmax head learns through autograd, instead of ``train.neutral_head_grads`` compiled:

    python benchmarks/engine_ab.py optimizer=sgd,compile=true,head=autograd optimizer=sgd,compile=true

One variant is not fflab at all: ``reference`` times ``benchmarks/reference_ff.py``, a model of
the reimplementation on which issue 3 anchors its "3 x faster per epoch" target, built for
``--hidden`` (its optimizer and dtype are its own, fp32 SGD). Put it first to read fflab's
speed-up over it on this machine from the paired ratios:

    python benchmarks/engine_ab.py reference optimizer=sgd,compile=true optimizer=adam

Besides each variant's own statistics it prints, for every variant after the first, the paired
difference from the first: the median and quartiles over rounds of (this variant's turn minus
the first variant's turn in the same round), and the paired ratio (the first variant's turn
divided by this one's: how many times faster this variant is). On a VM whose speed drifts, that is steadier than
the difference of the two medians. ``--hidden 16x3`` times a net whose step is almost all
per-step overhead.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from fflab import analytic, products, train, update
from fflab.bench import training_loop
from fflab.config import SupervisedFFConfig, _expand_times, apply_overrides

import reference_ff   # benchmarks/, beside this script


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variants", nargs="+", help="comma-separated overrides per variant, e.g. optimizer=sgd,compile=true")
    ap.add_argument("--hidden", default="1000x3")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20, help="steps per timed turn")
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    base = {"hidden": tuple(int(h) for h in _expand_times(args.hidden)), "batch_size": 100, "engine": "fused",
            "neutral_every": 4, "dtype": args.dtype, "device": "cpu"}
    print(f"torch {torch.__version__}, {args.threads} threads, {platform.processor() or platform.machine()}, "
          f"hidden {args.hidden}, batch 100, {args.dtype}, engine fused, neutral_every 4, "
          f"{args.rounds} rounds x {args.steps} steps")

    def without_onednn(run):   # the variant's turns with the forward products through addmm
        def wrapped():
            products.USE_ONEDNN = False
            try:
                run()
            finally:
                products.USE_ONEDNN = onednn
        return wrapped

    onednn = products.USE_ONEDNN

    compile_static = analytic.compile_static

    def compile_all_but_the_head(fn, device):   # head=autograd: no compiled neutral_head_grads
        return None if fn is train.neutral_head_grads else compile_static(fn, device)

    pseudo = ("update=plain", "linear=addmm", "head=autograd")
    runs = []   # each variant's task running --steps steps on synthetic MNIST-shaped data (as fflab bench)
    for variant in args.variants:
        if variant == "reference":
            runs.append(reference_ff.training_loop(args.steps, base["hidden"])[1])
            continue
        overrides = variant.split(",")
        cfg = apply_overrides(apply_overrides(SupervisedFFConfig(), base), [o for o in overrides if o not in pseudo])
        real = update.CompiledUpdate, update.ProductSGD
        if "update=plain" in overrides:   # the task builder then finds no update of its own and calls opt.step()
            update.CompiledUpdate = update.ProductSGD = lambda *a, **k: None
        if "head=autograd" in overrides:
            analytic.compile_static = compile_all_but_the_head
        try:
            runs.append(training_loop(cfg, args.steps)[1])
            if "linear=addmm" in overrides:
                runs[-1] = without_onednn(runs[-1])
        finally:
            update.CompiledUpdate, update.ProductSGD = real
            analytic.compile_static = compile_static

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
