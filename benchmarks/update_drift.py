"""Does ``update.CompiledUpdate`` compute the same update as torch's own optimizer step, at scale?

    python benchmarks/update_drift.py [--steps 300] [--optimizer adam|sgd] [--hidden 1000x3]

Two copies of the 3 x 1000 net (784-1000-1000-1000) start equal. Every step, the bf16 shared
engine (``dense.LabelledInput``) computes one set of FF gradients from the first copy; the first
copy takes them through torch's own optimizer step (``fused=True``; ``.grad`` widened to fp32,
as the plain bf16 path does), the second
through ``CompiledUpdate`` (bf16 gradients as they are). As both always receive the same
gradients, any difference is the update's own arithmetic, not a chaotic training trajectory.
Prints the largest relative difference between the two copies' parameters every 50 steps, and
how far the compiled update's bf16 weight copies are from the first copy's weights cast to bf16.
Random MNIST-shaped data, uniform wrong labels. Needs a C++ compiler (``CompiledUpdate``
compiles its step) and is slow on a CPU without native bf16 products. Not a test.
"""
from __future__ import annotations

import argparse
import copy

import torch

from fflab._engines.dense import LabelledInput
from fflab._engines.update import CompiledUpdate
from fflab.config import _expand_times
from fflab.negatives import uniform_wrong_labels
from fflab.nets import FFNet
from fflab.optim import make_optimizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--optimizer", default="adam", choices=["adam", "sgd"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--hidden", default="1000x3")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = FFNet.dense(784, [int(h) for h in _expand_times(args.hidden)])
    twin = copy.deepcopy(net)
    hyper = dict(name=args.optimizer, lr=1e-3 if args.optimizer == "adam" else 1e-2, momentum=0.9, weight_decay=1e-3)
    plain = make_optimizer(net.parameters(), **hyper)
    compiled = CompiledUpdate(make_optimizer(twin.parameters(), **hyper), copied=[l.weight for l in twin.layers],
                              dtype=torch.bfloat16)
    g = torch.Generator().manual_seed(0)
    for step in range(args.steps + 1):
        x = (torch.rand(100, 784, generator=g) > 0.8).float()
        y = torch.randint(0, 10, (100,), generator=g)
        grads: list[torch.Tensor] = []
        LabelledInput(net, x, 10, dtype=torch.bfloat16).ff_backward(y, uniform_wrong_labels(y, 10, generator=g), grads)
        for p, grad in zip(net.parameters(), grads):
            p.grad = grad.float()
        plain.step()
        compiled.step(grads)
        if step % 50 == 0:
            rel = max(((p - q).norm() / p.norm()).item() for p, q in zip(net.parameters(), twin.parameters()))
            copies = max((c.float() - layer.weight.detach().bfloat16().float()).abs().max().item()
                         for c, layer in zip(compiled.weights(), net.layers))
            print(f"step {step:4d}: largest relative parameter difference {rel:.2e}; "
                  f"bf16 copies against the plain copy cast to bf16: max abs difference {copies:.2e}")


if __name__ == "__main__":
    main()
