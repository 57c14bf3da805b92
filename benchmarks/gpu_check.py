"""Do the supervised-FF engines give autograd's updates on this device?

    python benchmarks/gpu_check.py --device cuda

For each engine (and ``compile=true``, where a C++ compiler or, on a GPU, Triton is there), a
few training steps of a small net from the same initial weights, the same batch and the same
generator state, against the plain autograd engine with the same settings on the same device.
Prints the largest weight difference relative to the largest weight of each tensor, and exits 1
if one is over its tolerance: fp32 differs from autograd by float rounding only (1e-5 allowed),
bf16 by where its roundings fall (3e-2 allowed). Negatives are drawn uniformly, so the labels
drawn depend on the generator alone, not on probabilities that differ in the last bit.

The optimizer is the official one, SGD with smoothing 0.9, which passes rounding differences on
at their size. Adam is left out: its first steps move every weight by about the learning rate
whatever its gradient's size, so a gradient near zero that rounds to the other sign moves a weight
by twice the learning rate, and no elementwise tolerance fits. The engines' gradients do not
depend on the optimizer, and ``update.CompiledUpdate``'s Adam is compared with torch's step in
``tests/test_update.py``.

The CPU suite checks the same on the CPU (``tests/test_analytic.py``, ``tests/test_train.py``)
and that every step is device-clean (``tests/test_device_agnostic.py``, on the meta device);
this script is the check with numbers on a real accelerator, the first part of
``benchmarks/gpu_run.sh``. On a CPU it runs as it is (``--device cpu``). Not a test.
"""
from __future__ import annotations

import argparse
import sys

import torch

from fflab._engines.compiled import has_cxx_compiler
from fflab.experiments.supervised import SupervisedFFConfig
from fflab.runtime import resolve_device
from fflab.train import build_task

VARIANTS = [   # (overrides on top of SGD, tolerance relative to each tensor's largest weight)
    (dict(engine="analytic"), 1e-5),
    (dict(engine="shared"), 1e-5),                   # fp32 SGD: update.ProductSGD
    (dict(engine="shared", neutral_every=2), 1e-5),  # the neutral pass and head step on 1 step in 2
    (dict(engine="shared", peer_norm=0.03), 1e-5),
    (dict(engine="shared", compile="true"), 1e-5),
    (dict(engine="analytic", dtype="bfloat16"), 3e-2),
    (dict(engine="shared", dtype="bfloat16"), 3e-2),
    (dict(engine="shared", dtype="bfloat16", compile="true"), 3e-2),   # update.CompiledUpdate
]


def params_after(over: dict, device: torch.device, x: torch.Tensor, y: torch.Tensor, steps: int
                 ) -> dict[str, torch.Tensor]:
    base = dict(hidden=(256, 256, 256), batch_size=x.shape[0], negatives="uniform", optimizer="sgd",
                lr=1e-2, head_lr=0.1, device=str(device))
    cfg = SupervisedFFConfig(**{**base, **over})
    task = build_task(cfg, device)   # seeds torch with cfg.seed: the same initial weights for every variant
    if task.setup is not None:
        task.setup({"x_train": x, "y_train": y})
    task.train(True)
    g = torch.Generator(device=device).manual_seed(1)
    idx = torch.arange(x.shape[0], device=device)
    for _ in range(steps):
        loss = task.step(x, y, g, idx)
    if not torch.isfinite(loss):
        raise SystemExit(f"{over}: loss {loss.item()}")
    return {f"{m}.{n}": p.detach().float().cpu() for m, mod in task.modules.items()
            for n, p in mod.named_parameters()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"torch {torch.__version__}, device {device} ({name})")
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(args.batch, 784, generator=gen) > 0.8).float().to(device)
    y = torch.randint(0, 10, (args.batch,), generator=gen).to(device)
    can_compile = device.type != "cpu" or has_cxx_compiler()
    failed = 0
    for over, tol in VARIANTS:
        label = ",".join(f"{k}={v}" for k, v in over.items())
        if over.get("compile") == "true" and not can_compile:
            print(f"{label:40s} skipped: no C++ compiler for torch.compile on CPU")
            continue
        try:
            want = params_after({**over, "engine": "autograd", "compile": "false"}, device, x, y, args.steps)
            got = params_after(over, device, x, y, args.steps)
        except Exception as e:   # report every variant, then fail
            print(f"{label:40s} FAILED: {type(e).__name__}: {e}")
            failed += 1
            continue
        rel = max(((got[k] - want[k]).abs().max() / want[k].abs().max().clamp_min(1e-12)).item() for k in want)
        ok = rel <= tol
        failed += not ok
        print(f"{label:40s} max over tensors of max |w - w_autograd| / max |w_autograd| = {rel:.2e} "
              f"(tolerance {tol:.0e}) {'ok' if ok else 'OVER'}")
    print("all within tolerance" if not failed else f"{failed} variant(s) failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
