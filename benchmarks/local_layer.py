"""Time the two implementations of ``FFLocal`` (locally connected FF layers) and its patch gather.

    python benchmarks/local_layer.py [--threads 1] [--batch 200] [--rounds 15]

``FFLocal(impl="dense")`` (the default) scatters the local weights into a zero dense matrix and
makes one ordinary GEMM, ~1/density more multiply-adds than needed; ``impl="bmm"`` makes one
batched product over locations with only U columns each. This times both, forward + backward of
the layer's own FF loss on ``--batch`` cases (positives and negatives together), for the MNIST
geometry of ``fflab.local.MNIST_LOCAL_LAYERS``: layer 1, (1, 28, 28) -> (10, 14, 14), and one of
layers 2-4, (10, 14, 14) -> (10, 14, 14). Then the bmm path's patch gather: the strided view with
one copy into the GEMM layout that ``FFLocal`` uses, against ``F.unfold`` and a permute copy,
at batch 64 and 1000. The variants of each comparison are timed in turns (``--rounds`` times)
so that a drifting machine's speed falls on both alike; prints medians in ms. Not a test.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from fflab.local import MNIST_LOCAL_LAYERS, FFLocal


def interleaved(fns: dict[str, Callable[[], None]], rounds: int) -> dict[str, float]:
    """Median ms per call of each function, timed in turns after one warm-up call each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append((time.perf_counter() - t) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def layer_step(layer: FFLocal, x: torch.Tensor) -> Callable[[], None]:
    """Forward and backward of the layer's FF loss, positives the first half of ``x``."""
    b = x.shape[0] // 2

    def run() -> None:
        layer.zero_grad(set_to_none=True)
        h = layer(x)
        layer.local_loss(h[:b], h[b:]).backward()

    return run


def gathers(layer: FFLocal, x: torch.Tensor) -> dict[str, Callable[[], None]]:
    """The bmm path's patches (L, B, K), made FFLocal's way and through ``F.unfold``."""
    p, s, pad = layer.patch, layer.stride, layer.padding
    img = x.reshape(x.shape[0], *layer.in_shape)

    def strided() -> None:
        xp = F.pad(img, (pad,) * 4) if pad else img
        cols = xp.unfold(2, p, s).unfold(3, p, s).permute(2, 3, 0, 1, 4, 5)
        cols.reshape(layer.num_locations, x.shape[0], layer.fan_in)

    def unfold() -> None:
        cols = F.unfold(img, p, padding=pad, stride=s)             # (B, K, L)
        cols.permute(2, 0, 1).contiguous()

    return {"strided view + one copy": strided, "F.unfold + permute copy": unfold}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=200, help="cases per step, positives and negatives")
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {platform.processor() or platform.machine()}, "
          f"{args.rounds} rounds")
    shapes = {"layer 1": (1, 28, 28), "layers 2-4": (10, 14, 14)}
    fields = {"layer 1": MNIST_LOCAL_LAYERS[0], "layers 2-4": MNIST_LOCAL_LAYERS[1]}
    g = torch.Generator().manual_seed(0)
    for name, shape in shapes.items():
        x = torch.rand(args.batch, shape[0] * shape[1] * shape[2], generator=g)
        steps = {impl: layer_step(FFLocal(shape, **fields[name], impl=impl, generator=g), x)
                 for impl in ("dense", "bmm")}
        ms = interleaved(steps, args.rounds)
        print(f"{name} {shape} -> forward + backward on {args.batch} cases: "
              + ", ".join(f"{impl} {t:.2f} ms" for impl, t in ms.items()))
    layer = FFLocal(shapes["layer 1"], **fields["layer 1"], impl="bmm")
    for batch in (64, 1000):
        x = torch.rand(batch, 784, generator=g)
        ms = interleaved(gathers(layer, x), args.rounds)
        print(f"layer 1 patch gather, batch {batch}: " + ", ".join(f"{k} {t:.3f} ms" for k, t in ms.items()))


if __name__ == "__main__":
    main()
