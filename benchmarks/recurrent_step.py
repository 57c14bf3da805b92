"""Time one training step of the recurrent FF net (paper section 4) per engine and dtype.

    python benchmarks/recurrent_step.py --hidden 2000 --threads 2 [--linear addmm]

Random MNIST-shaped data (batch 100, 784 pixels); warm-up steps excluded; prints the median and
the range of ``--reps`` steps and the implied seconds per 60,000-image epoch (training only,
no evaluation), with the torch version and thread count. ``--linear addmm`` makes the forward
products through ``torch.addmm`` instead of oneDNN's linear (``products.use_onednn(False)``).
Not a test: nothing is asserted.
"""
from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import time

import torch

from fflab._engines import products
from fflab.config import apply_overrides
from fflab.experiments.recurrent import ENGINES, RecurrentFFConfig
from fflab.train import build_task


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=2000, help="units per hidden layer (two layers)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--engines", default="autograd,shared", help=f"comma-separated, of {', '.join(ENGINES)}")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--linear", choices=["onednn", "addmm"], default="onednn",
                    help="the forward products' library on CPU (onednn: where it fits, as runs do)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {platform.processor() or platform.machine()}, "
          f"2 x {args.hidden} hidden, batch {args.batch}, 8 iterations, forward products {args.linear}")
    linear = products.use_onednn(False) if args.linear == "addmm" else contextlib.nullcontext()
    with linear:
        for engine in args.engines.split(","):
            for dtype in args.dtypes.split(","):
                cfg = apply_overrides(RecurrentFFConfig(), {"hidden": (args.hidden, args.hidden), "engine": engine,
                                                            "dtype": dtype, "batch_size": args.batch,
                                                            "device": "cpu"})
                task = build_task(cfg, "cpu")
                task.train(True)
                g = torch.Generator().manual_seed(0)
                x, y = torch.rand(args.batch, 784, generator=g), torch.randint(0, 10, (args.batch,), generator=g)
                for _ in range(args.warmup):
                    task.step(x, y, g)
                times = []
                for _ in range(args.reps):
                    t = time.perf_counter()
                    task.step(x, y, g)
                    times.append(time.perf_counter() - t)
                med = statistics.median(times)
                print(f"{engine:9s} {dtype:9s} {med * 1e3:7.1f} ms/step "
                      f"(range {min(times) * 1e3:.1f}-{max(times) * 1e3:.1f})"
                      f"  {med * 60000 / args.batch:6.0f} s per 60k epoch")


if __name__ == "__main__":
    main()
