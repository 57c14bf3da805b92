"""Which tensors of a training run hold denormal floats, epoch by epoch, and what they cost.

Denormal (subnormal) fp32 numbers, below 1.18e-38 in magnitude, take a slow path on many x86
CPUs: an operation that reads or writes one can cost tens to hundreds of cycles instead of one.
fflab runs CPU training with flush-to-zero and denormals-are-zero on (``fflab.runtime``,
``flush_denormal`` in env.json); this script trains a recipe with it off and counts, after each
epoch, the denormals in the parameters, their gradients, the optimizer state and one batch's
activities, and times one epoch-equivalent of steps with the flag off and on.

    python benchmarks/denormals.py demo --epochs 6 --data-dir DIR [key=value ...]
"""
from __future__ import annotations

import argparse
import math
import time

import torch

from fflab import runtime
from fflab.config import apply_overrides
from fflab.optim import lr_factor
from fflab.recipes import get_recipe
from fflab.task import epoch_generator
from fflab.train import build_task, load_data

TINY = torch.finfo(torch.float32).tiny   # the smallest normal fp32 number


def denormal_fraction(t: torch.Tensor) -> tuple[int, int]:
    """(number of denormal entries, number of entries) of a float tensor."""
    t = t.detach().float()
    return int(((t != 0) & (t.abs() < TINY)).sum()), t.numel()


def census(task, x: torch.Tensor) -> dict[str, tuple[int, int]]:
    """Denormal counts by kind of tensor."""
    out: dict[str, list[int]] = {}

    def add(kind: str, t: torch.Tensor) -> None:
        d, n = denormal_fraction(t)
        acc = out.setdefault(kind, [0, 0])
        acc[0] += d
        acc[1] += n

    for name, module in task.modules.items():
        for p in module.parameters():
            add(f"{name} weights" if p.dim() > 1 else f"{name} biases", p)
            if p.grad is not None:
                add(f"{name} gradients", p.grad)
    for name, opt in task.optimizers.items():
        for state in opt.state.values():
            for key, v in state.items():
                if torch.is_tensor(v) and v.is_floating_point() and v.dim() > 0:
                    add(f"{name} optimizer {key}", v)
    net = task.modules.get("net")
    if net is not None:
        with torch.no_grad():
            for i, h in enumerate(net(x)):
                add(f"activities layer {i}", h)
    return {k: (v[0], v[1]) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipe")
    ap.add_argument("overrides", nargs="*")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--data-dir")
    ap.add_argument("--time-steps", type=int, default=100, help="steps timed with the flag off and on")
    args = ap.parse_args()
    cfg = apply_overrides(get_recipe(args.recipe).config(), args.overrides)
    torch.set_flush_denormal(False)
    rt = runtime.resolve(cfg)
    data, shape = load_data(cfg, rt.device, args.data_dir)
    x, y = data["x_train"], data["y_train"]
    n = x.shape[0]
    steps = math.ceil(n / cfg.batch_size)
    task = build_task(cfg, rt, shape)
    if task.setup is not None:
        task.setup(data)
    probe = x[:1000]
    for epoch in range(args.epochs):
        for k, opt in task.optimizers.items():
            for group in opt.param_groups:
                group["lr"] = task.base_lrs[k] * lr_factor(cfg.lr_schedule, epoch, cfg.epochs)
        task.train(True)
        g = epoch_generator(cfg.seed, epoch, rt.device)
        perm = torch.randperm(n, generator=g)
        times = {}
        for i in range(steps):
            flag = None
            if i < 2 * args.time_steps:   # alternate off / on for the first steps of the epoch
                flag = i % 2 == 1
                torch.set_flush_denormal(flag)
                t0 = time.perf_counter()
            idx = perm[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            task.step(x[idx], y[idx], g, idx)
            if flag is not None:
                times.setdefault(flag, []).append(time.perf_counter() - t0)
        torch.set_flush_denormal(False)
        off, on = (sorted(times[f])[len(times[f]) // 2] * 1e3 for f in (False, True))
        print(f"epoch {epoch + 1}: median step {off:.2f} ms flush off, {on:.2f} ms on ({off / on:.2f} x)")
        for kind, (d, total) in sorted(census(task, probe).items()):
            if d:
                print(f"  {kind:36s} {d:>10d} of {total:>10d} denormal ({100 * d / total:.3f}%)")


if __name__ == "__main__":
    main()
