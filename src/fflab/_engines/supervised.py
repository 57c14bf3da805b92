"""Supervised FF's training step, computed the fastest way the net and the device allow
(paper section 3.3): the neutral pass with the head's gradient, and the FF update of the net.

Engines (``engine=``), all making the same updates up to float rounding (tests/test_analytic.py):

- ``autograd``: the reference; autograd differentiates ``FFLayer.local_loss``.
- ``analytic``: ``FFLayer.local_grad`` by hand (``dense.ff_backward``): no graph, no saved
  tensors, one product per layer for the update.
- ``shared``: analytic, with the first layer's image product shared by the neutral, positive and
  negative passes (``dense.LabelledInput``); with ``compile`` its elementwise work and the neutral
  pass run as compiled graphs, with bf16 also the optimizer step (``update.CompiledUpdate``), and
  with fp32 SGD the weight-gradient products are made straight into the momentum buffer
  (``update.ProductSGD``).
- ``auto``: ``shared`` where every layer is dense, else ``autograd``.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from .. import distributed
from ..config import check_choice
from ..errors import ConfigError
from ..negatives import overlay_label
from ..nets import FFNet, SoftmaxHead
from ..runtime import Runtime
from . import dense
from .compiled import compile_static, has_cxx_compiler
from .update import CompiledUpdate, ProductSGD

ENGINES = ("auto", "shared", "analytic", "autograd")
COMPILE = ("auto", "true", "false")
# compile=auto compiles runs of at least this many training steps: compiling takes tens of
# seconds on a 2-core CPU and saves a few percent of each step.
AUTO_COMPILE_MIN_STEPS = 20_000


def choose_engine(requested: str, net: FFNet) -> str:
    """The engine a run uses: ``requested``, or for ``auto`` the fastest one that supports ``net``."""
    check_choice("engine", requested, ENGINES)
    if requested in ("analytic", "shared") and not dense.supports(net):
        raise ConfigError(f"engine={requested} needs dense layers (use engine=autograd or auto)")
    if requested != "auto":
        return requested
    return "shared" if dense.supports(net) else "autograd"


def choose_compile(requested: str, engine: str, rt: Runtime) -> bool:
    """Whether the shared engine runs compiled: ``true``/``false``, or for ``auto`` when the run is
    long enough to pay for compiling (``rt.steps``) and inductor can build kernels here."""
    check_choice("compile", requested, COMPILE)
    if requested == "true" and engine != "shared":
        raise ConfigError(f"compile=true applies to engine=shared only (this run: engine={engine})")
    if requested != "auto":
        return requested == "true"
    return (engine == "shared" and rt.steps is not None and rt.steps >= AUTO_COMPILE_MIN_STEPS
            and (rt.device.type != "cpu" or has_cxx_compiler()))


@torch.no_grad()
def neutral_head_grads(li: dense.LabelledInput, head: SoftmaxHead, y: torch.Tensor, layers: list[int]
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The neutral pass of ``li`` and the one-pass softmax head on its normalized activities:
    the head's probabilities (B, C) and the gradient of its mean cross-entropy on labels ``y`` for
    its weight and bias, made without autograd (dL/dlogits = (softmax - onehot(y)) / B)."""
    return head_grads(li.net.features(li.forward(None), layers), head, y)


@torch.no_grad()
def head_grads(feats: torch.Tensor, head: SoftmaxHead, y: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The head's probabilities on ``feats`` (B, F) and its weight and bias gradients."""
    probs = head(feats).softmax(1)
    dlogits = (probs - F.one_hot(y, probs.shape[1]).to(probs.dtype)) / y.shape[0]
    return probs, dlogits.t() @ feats, dlogits.sum(0)


class SupervisedEngine:
    """One training step of supervised FF, split where the experiment draws its negatives:
    ``inputs(x)`` -> ``neutral(inputs, y)`` (probabilities, head gradients set) ->
    ``update(inputs, y, y_neg)`` (the net's FF gradients and optimizer step; returns the loss)
    -> ``head_step()``."""

    def __init__(self, name: str, net: FFNet, head: SoftmaxHead, opt: torch.optim.Optimizer,
                 head_opt: torch.optim.Optimizer, *, layers: list[int], num_classes: int,
                 rt: Runtime, compile: bool) -> None:
        self.name, self.compiled = name, compile
        self.net, self.head, self.opt, self.head_opt = net, head, opt, head_opt
        self.layers, self.num_classes, self.rt = layers, num_classes, rt
        self.dtype = rt.product_dtype
        self._ff_backward = dense.LabelledInput.ff_backward
        self._neutral_compiled = None
        # The net's optimizer step where this engine has a faster one than opt.step(); it takes
        # the gradients as a list.
        self._net_update: CompiledUpdate | ProductSGD | None = None
        self._update_enabled = True
        if compile:
            self._ff_backward = dense.compiled_ff_backward(rt.device)
            self._neutral_compiled = compile_static(neutral_head_grads, rt.device)
            if self.dtype is not None:
                # bf16: the optimizer step compiled too, taking the bf16 gradients as they leave
                # their products and writing the bf16 weight copies the next step's products read
                # (the same update as opt.step(), tests/test_update.py).
                self._net_update = CompiledUpdate(opt, copied=[layer.weight for layer in net.layers],
                                                  dtype=self.dtype)
        if rt.parallel.active:
            # data parallel: gradients are averaged over the processes as tensors before the step
            self._net_update = None
        elif (name == "shared" and self.dtype is None and isinstance(opt, torch.optim.SGD)
                and opt.param_groups[0]["momentum"] > 0):
            # fp32 SGD: each weight-gradient product made straight into the momentum buffer
            # (the same update as opt.step(), tests/test_update.py).
            self._net_update = ProductSGD(opt)

    def use_plain(self, *, update: bool = False, head: bool = False) -> None:
        """From now on make the net's optimizer step with ``opt.step()`` (``update``) and the head's
        gradient with autograd (``head``) instead of this engine's merged update and compiled
        neutral pass: the same numbers up to rounding; benchmarks time one against the other.
        Call before the first step."""
        if update:
            self._net_update = None
        if head:
            self._neutral_compiled = None

    @property
    def _defer(self) -> bool:
        return isinstance(self._net_update, ProductSGD)

    def inputs(self, x: torch.Tensor):
        """The batch as this engine feeds it: the shared image product, or the images."""
        if self.name != "shared":
            return x
        weights = self._net_update.weights() if isinstance(self._net_update, CompiledUpdate) else None
        return dense.LabelledInput(self.net, x, self.num_classes, dtype=self.dtype, weights=weights)

    def neutral(self, inputs, y: torch.Tensor) -> torch.Tensor:
        """The neutral-label pass: the head's probabilities (B, C), with its gradients set."""
        if self._neutral_compiled is not None:   # no autograd for the head
            probs, self.head.linear.weight.grad, self.head.linear.bias.grad = self._neutral_compiled(
                inputs, self.head, y, self.layers)
            return probs
        if isinstance(inputs, dense.LabelledInput):
            hs = inputs.forward(None)
        else:
            with torch.no_grad(), self.rt.autocast():
                hs = self.net(overlay_label(inputs, None, self.num_classes))
        self.head_opt.zero_grad(set_to_none=True)
        logits = self.head(self.net.features(hs, self.layers))
        F.cross_entropy(logits, y).backward()   # the head's own graph: the FF net is detached
        return logits.detach().softmax(1)

    def update(self, inputs, y: torch.Tensor, y_neg: torch.Tensor) -> torch.Tensor:
        """Positive (label y) and negative (label y_neg) passes, each layer's FF gradients, and the
        net's optimizer step. Returns the summed layer losses (detached)."""
        grads: list | None = [] if self._net_update is not None else None
        if grads is None:
            self.opt.zero_grad(set_to_none=True)
        if isinstance(inputs, dense.LabelledInput):
            loss = self._ff_backward(inputs, y, y_neg, grads, self._defer)
        else:
            b, C = inputs.shape[0], self.num_classes
            # positive and negative passes as one batched product per layer
            x_pn = torch.cat([overlay_label(inputs, y, C), overlay_label(inputs, y_neg, C)])
            if self.name == "analytic":
                loss, _ = dense.ff_backward(self.net, x_pn, b, dtype=self.dtype)
            else:
                with self.rt.autocast():
                    hs = self.net(x_pn)
                loss = torch.stack(self.net.local_losses([h[:b] for h in hs], [h[b:] for h in hs])).sum()
                loss.backward()
        if self._update_enabled:
            if self._net_update is not None:
                self._net_update.step(grads)
            else:
                _average(self.net, self.rt)
                self.opt.step()
        elif self._defer:   # the products are the engine's work, not the update's: still made
            for g in grads:
                if hasattr(g, "materialize"):
                    g.materialize()
        return loss.detach()

    def head_step(self) -> None:
        """The head's optimizer step (after ``neutral``)."""
        if self._update_enabled:
            _average(self.head, self.rt)
            self.head_opt.step()

    @contextlib.contextmanager
    def without_update(self) -> Iterator[None]:
        """Within the block, ``update`` and ``head_step`` compute the gradients but skip the
        optimizer steps (benchmarks time what the updates cost in place)."""
        self._update_enabled = False
        try:
            yield
        finally:
            self._update_enabled = True


def _average(module: torch.nn.Module, rt: Runtime) -> None:
    """Data parallel: the module's gradients averaged over the processes (one all-reduce)."""
    if rt.parallel.active:
        distributed.mean_over_ranks([p.grad for p in module.parameters() if p.grad is not None], rt.parallel)


def supervised_engine(requested: str, compile: str, net: FFNet, head: SoftmaxHead,
                      opt: torch.optim.Optimizer, head_opt: torch.optim.Optimizer, *,
                      layers: list[int], num_classes: int, rt: Runtime) -> SupervisedEngine:
    """The engine for this net, config and runtime (``choose_engine``, ``choose_compile``)."""
    name = choose_engine(requested, net)
    # data parallel averages the peer means and gradients with collectives, which a compiled
    # graph would have to trace: such runs step eagerly
    compiled = choose_compile(compile, name, rt) and not rt.parallel.active
    return SupervisedEngine(name, net, head, opt, head_opt, layers=layers, num_classes=num_classes,
                            rt=rt, compile=compiled)
