"""The FF net's optimizer step merged with the engine's work (paper section 2):
``CompiledUpdate`` with the low-precision weight copies, ``ProductSGD`` (at the end) with the
weight-gradient products.

With ``dtype=bfloat16`` every training step, done the plain way, makes three extra passes over
the weights besides the optimizer's own: each weight gradient leaves its bf16 product and is
widened to fp32 (``.grad`` must match the fp32 master weight), the optimizer reads it back, and
the next step narrows every master weight to bf16 again for its products. ``CompiledUpdate``
does all of it in one compiled loop per tensor: it reads the master weight, the bf16 gradient and
the optimizer state, and writes the new weight, the new state and the bf16 copy the next step's
products use. For fp32 it is the same update without the copies, one call for all tensors.

The arithmetic is torch's own SGD (momentum, dampening, L2 weight decay) and Adam (L2 weight
decay, no amsgrad), and the state lives in the torch optimizer's ``state`` under torch's keys, so
``state_dict``, checkpoints and resuming are those of the plain optimizer, and a run may switch
between the two (``tests/test_update.py`` compares them step by step). The first step of each
tensor is left to torch, so its state starts exactly as torch starts it.
"""
from __future__ import annotations

from typing import NamedTuple

import torch


def _sgd(params, grads, bufs, copies, lr, *, momentum: float, dampening: float, weight_decay: float):
    for p, g, buf, c in zip(params, grads, bufs, copies):
        d = g.to(p.dtype)
        if weight_decay:
            d = d + weight_decay * p
        buf.mul_(momentum).add_(d, alpha=1 - dampening)
        p.sub_(lr * buf)
        if c is not None:
            c.copy_(p)


def _adam(params, grads, exp_avgs, exp_avg_sqs, copies, step_sizes, bias_correction2_sqrts, *, beta1: float,
          beta2: float, eps: float, weight_decay: float):
    # The bias corrections arrive computed, one value per tensor, as torch computes them on the
    # host: written in here as powers of a step tensor, inductor evaluated them once per element,
    # which made the compiled step slower than torch's fused Adam.
    for i, (p, g, m, v, c) in enumerate(zip(params, grads, exp_avgs, exp_avg_sqs, copies)):
        d = g.to(p.dtype)
        if weight_decay:
            d = d + weight_decay * p
        m.lerp_(d, 1 - beta1)
        v.mul_(beta2).addcmul_(d, d, value=1 - beta2)
        p.sub_(step_sizes[i] * m / (v.sqrt() / bias_correction2_sqrts[i] + eps))
        if c is not None:
            c.copy_(p)


class CompiledUpdate:
    """``opt.step()`` for gradients of any float dtype, compiled, refreshing ``dtype`` copies of
    the ``copied`` parameters (e.g. the weight matrices the products read) in the same pass.

    ``opt``: a torch SGD or Adam over one param group. ``dtype``: the copies' dtype, or None for no
    copies. Use ``weights()`` for the copies (recast if anything else changed a parameter since the
    last step, e.g. loading a checkpoint) and ``step(grads)`` with one gradient per parameter.
    """

    def __init__(self, opt: torch.optim.Optimizer, *, copied: list[torch.nn.Parameter],
                 dtype: torch.dtype | None):
        if len(opt.param_groups) != 1:
            raise ValueError("CompiledUpdate handles an optimizer with one param group")
        group = opt.param_groups[0]
        if isinstance(opt, torch.optim.SGD):
            if group["nesterov"] or group["maximize"] or not group["momentum"]:
                raise ValueError("CompiledUpdate's SGD needs momentum > 0, no nesterov, no maximize")
            self._keys = ("momentum_buffer",)
            self._fn = _sgd
            self._hyper = {"momentum": group["momentum"], "dampening": group["dampening"],
                           "weight_decay": group["weight_decay"]}
        elif isinstance(opt, torch.optim.Adam):
            if group["amsgrad"] or group["maximize"] or isinstance(group["lr"], torch.Tensor):
                raise ValueError("CompiledUpdate's Adam needs amsgrad=False, maximize=False, a float lr")
            self._keys = ("exp_avg", "exp_avg_sq", "step")
            self._fn = _adam
            beta1, beta2 = group["betas"]
            self._hyper = {"beta1": beta1, "beta2": beta2, "eps": group["eps"],
                           "weight_decay": group["weight_decay"]}
        else:
            raise ValueError(f"CompiledUpdate handles SGD and Adam, not {type(opt).__name__}")
        self.opt, self.dtype = opt, dtype
        self.params: list[torch.nn.Parameter] = list(group["params"])
        ids = {id(p) for p in copied}
        self._copied = [id(p) in ids for p in self.params]
        self._copies: list[torch.Tensor | None] = [
            torch.empty_like(p, dtype=dtype) if dtype is not None and is_copied else None
            for p, is_copied in zip(self.params, self._copied)]
        self._versions: list[int] | None = None    # the params' versions when the copies were made
        self._compiled = torch.compile(self._fn, dynamic=False)

    def _stale(self) -> bool:
        return self._versions != [p._version for p in self.params]

    @torch.no_grad()
    def weights(self) -> list[torch.Tensor]:
        """The ``dtype`` copies of the copied parameters, in parameter order (with no dtype, the
        parameters themselves)."""
        if self._stale():
            for p, c in zip(self.params, self._copies):
                if c is not None:
                    c.copy_(p)
            self._versions = [p._version for p in self.params]
        return [c if c is not None else p.detach()
                for p, c, is_copied in zip(self.params, self._copies, self._copied) if is_copied]

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor]) -> None:
        """One optimizer step with ``grads`` (one per parameter, any float dtype)."""
        if len(grads) != len(self.params):
            raise ValueError(f"{len(grads)} gradients for {len(self.params)} parameters")
        state = self.opt.state
        if any(p not in state for p in self.params):
            # First step: torch initializes its own state (SGD's buffer starts as the gradient).
            for p, g in zip(self.params, grads):
                p.grad = g.to(p.dtype)
            self.opt.step()
            for p in self.params:
                p.grad = None
            self._versions = None
            self.weights()
            return
        lr = self.opt.param_groups[0]["lr"]
        per_key = [[state[p][k] for p in self.params] for k in self._keys]
        # Scalars that change go in as tensors (as floats, each new value would recompile),
        # on the parameters' device so that the compiled kernels read them in place.
        device = self.params[0].device
        if self._fn is _adam:
            # torch's Adam: step counts are tensors, bias corrections are host floats
            steps = per_key.pop()
            torch._foreach_add_(steps, 1)
            # Computed where the step counts are, in float64 as torch computes them on the host,
            # then rounded to float32: the same values as host floats (checked for the first
            # 200,000 steps), without reading the counts back (a sync on every GPU step).
            k = torch.stack(steps).double()
            b1, b2 = self._hyper["beta1"], self._hyper["beta2"]
            scalars = ((lr / (1 - b1 ** k)).to(device, torch.float32),
                       (1 - b2 ** k).sqrt().to(device, torch.float32))
        else:
            scalars = (torch.tensor(lr, dtype=torch.float32, device=device),)
        self._compiled(self.params, grads, *per_key, self._copies, *scalars, **self._hyper)
        self._versions = [p._version for p in self.params]


class GradProduct(NamedTuple):
    """A weight gradient not yet computed: ``a.T @ b`` (the analytic engine's weight-gradient
    product, dL/dz of the layer's rows by its input rows), plus ``cols``, when given, added to
    the first ``cols.shape[1]`` columns (the first layer's label columns, ``analytic``)."""
    a: torch.Tensor
    b: torch.Tensor
    cols: torch.Tensor | None = None

    def materialize(self) -> torch.Tensor:
        g = torch.mm(self.a.t(), self.b)
        if self.cols is not None:
            g[:, :self.cols.shape[1]] += self.cols
        return g


class ProductSGD:
    """``opt.step()`` for torch's SGD with momentum, taking each weight gradient as the product
    that makes it (``GradProduct``) and making that product straight into the momentum buffer.

    Torch's step is ``buf = momentum * buf + (1 - dampening) * (g + weight_decay * p)``, then
    ``p -= lr * buf``. The first half is one GEMM with a nonzero beta, ``buf.addmm_(a.T, b,
    beta=momentum, alpha=1 - dampening)``, so the gradient is never written out and read back:
    for a 3 x 1000 net that is 11 MB written and 11 MB read less per step, and gradient, buffer
    and weights (33 MB) no longer compete for the cache. The weight decay term and ``p -= lr * buf``
    follow as ``foreach`` passes (BENCHMARKS.md has what it saves).

    Same arithmetic as torch's SGD up to float rounding (``tests/test_update.py``), the state in
    the optimizer's ``state`` under torch's key, so ``state_dict``, checkpoints and resuming are
    the plain optimizer's. A tensor with no buffer yet takes its first step from torch (whose
    buffer starts as the gradient, undamped); ``optim.make_optimizer`` starts every buffer at 0,
    the official smoothing, so its SGD never takes that path. Gradients that are tensors
    (biases) take the same update.
    """

    def __init__(self, opt: torch.optim.Optimizer):
        if not isinstance(opt, torch.optim.SGD):
            raise ValueError(f"ProductSGD steps a torch SGD, not {type(opt).__name__}")
        if len(opt.param_groups) != 1:
            raise ValueError("ProductSGD handles an optimizer with one param group")
        group = opt.param_groups[0]
        if group["nesterov"] or group["maximize"] or not group["momentum"] or isinstance(group["lr"], torch.Tensor):
            raise ValueError("ProductSGD needs momentum > 0, no nesterov, no maximize, a float lr")
        self.opt = opt
        self.params: list[torch.nn.Parameter] = list(group["params"])

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor | GradProduct]) -> None:
        """One SGD step with ``grads``, one per parameter in order: a tensor or a ``GradProduct``."""
        if len(grads) != len(self.params):
            raise ValueError(f"{len(grads)} gradients for {len(self.params)} parameters")
        group, state = self.opt.param_groups[0], self.opt.state
        if any(p not in state for p in self.params):
            # First step: torch initializes its own state (the buffer starts as the gradient).
            for p, g in zip(self.params, grads):
                p.grad = (g.materialize() if isinstance(g, GradProduct) else g).to(p.dtype)
            self.opt.step()
            for p in self.params:
                p.grad = None
            return
        m, d, wd = group["momentum"], group["dampening"], group["weight_decay"]
        bufs = [state[p]["momentum_buffer"] for p in self.params]
        plain_bufs, plain_grads = [], []
        for g, buf in zip(grads, bufs):
            if isinstance(g, GradProduct):
                if g.a.dtype != buf.dtype or g.b.dtype != buf.dtype:
                    raise ValueError(f"ProductSGD makes the product in the buffer's dtype {buf.dtype}; "
                                     f"got factors in {g.a.dtype} and {g.b.dtype}")
                buf.addmm_(g.a.t(), g.b, beta=m, alpha=1 - d)
                if g.cols is not None:
                    buf[:, :g.cols.shape[1]].add_(g.cols, alpha=1 - d)
            else:
                plain_bufs.append(buf)
                plain_grads.append(g.to(buf.dtype))
        if plain_bufs:
            torch._foreach_mul_(plain_bufs, m)
            torch._foreach_add_(plain_bufs, plain_grads, alpha=1 - d)
        if wd:
            torch._foreach_add_(bufs, self.params, alpha=(1 - d) * wd)
        torch._foreach_add_(self.params, bufs, alpha=-group["lr"])
