"""Supervised FF with the label in the input (paper section 3.3).

The first ``num_classes`` pixels of each image are replaced by a one-hot label (positive: the
true label; negative: a wrong one, drawn in proportion to the model's own belief, "hard
negatives", or uniformly). A linear softmax head learns on the normalized activities of a
neutral-label pass, which also gives the hard negatives. Two tests: the label whose per-label
goodness (summed over ``eval_from_layer:``) is highest, and the head on one neutral pass.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .. import distributed, runs
from .._engines import dense
from .._engines.supervised import supervised_engine
from ..config import CommonConfig, HeadFields, ObjectiveFields, OptimizerFields, check_choice
from ..errors import ConfigError
from ..negatives import hard_wrong_labels, overlay_label, uniform_wrong_labels
from ..nets import FFNet, SoftmaxHead
from ..optim import make_optimizer
from ..pipeline import SupervisedPipeline
from ..runtime import Runtime
from ..task import MNIST_SHAPE, DataShape, Task
from ._common import check_eval_from_layer, jitter, write_goodness


@dataclass(frozen=True)
class SupervisedFFConfig(ObjectiveFields, HeadFields, OptimizerFields, CommonConfig):
    """Supervised FF with the label in the first pixels (paper section 3.3)."""
    hidden: tuple[int, ...] = (2000, 2000, 2000, 2000)
    negatives: str = "hard"               # hard | uniform
    eval_from_layer: int = 1              # evaluations use hidden layers [eval_from_layer:] (paper: skip the first)
    per_label_eval: bool = True           # per-label goodness test (10 passes); one-pass is always run
    block_size: int = 0                   # block goodness (paper section 7): units per block, 0 = whole layer
    neutral_every: int = 1                # the neutral pass on every k-th step only; the other steps draw
                                          # hard negatives from each image's cached probabilities
    engine: str = "auto"                  # auto | shared | analytic | autograd (fflab._engines.supervised)
    compile: str = "auto"                 # auto | true | false: torch.compile the shared engine's step
                                          # (needs a C++ compiler on CPU; auto: long runs only)
    pipeline_lag: int = -1                # parallel=pipeline: the neutral pass runs this many steps ahead
                                          # of the batch's update (its negatives' staleness; -1: stages - 1)


class ProbabilityCache:
    """Per-image hard-negative probabilities from the last neutral pass that saw each image
    (uniform until then), for ``neutral_every > 1``; saved in checkpoints."""

    def __init__(self, every: int, num_classes: int, device: torch.device) -> None:
        self.every, self.num_classes = every, num_classes
        self.probs = torch.empty(0, num_classes, device=device)
        self.step, self.sized = 0, False

    def size(self, n: int) -> None:
        if n > self.probs.shape[0]:
            grown = torch.full((n, self.num_classes), 1.0 / self.num_classes, device=self.probs.device)
            grown[: self.probs.shape[0]] = self.probs
            self.probs = grown

    def stale(self, idx: torch.Tensor | None) -> bool:
        """Whether this step reads cached probabilities instead of running the neutral pass."""
        stale = self.every > 1 and idx is not None and self.step % self.every != 0
        self.step += 1
        return stale

    def _sized_for(self, idx: torch.Tensor) -> torch.Tensor:
        if not self.sized:   # step() called outside fit: size from the indices
            self.size(int(idx.max()) + 1)
        return self.probs

    def get(self, idx: torch.Tensor) -> torch.Tensor:
        return self._sized_for(idx)[idx]

    def put(self, idx: torch.Tensor | None, probs: torch.Tensor) -> None:
        if self.every > 1 and idx is not None:
            self._sized_for(idx)[idx] = probs.float()


def build(cfg: SupervisedFFConfig, rt: Runtime, shape: DataShape = MNIST_SHAPE) -> Task:
    num_classes, in_features = shape.num_classes, shape.in_features
    if in_features <= num_classes:
        raise ConfigError(f"supervised FF writes the label into the first {num_classes} inputs; "
                          f"images of {in_features} values leave none for the image")
    check_choice("negatives", cfg.negatives, ("hard", "uniform"))
    check_eval_from_layer(cfg.eval_from_layer, len(cfg.hidden))
    device = rt.device
    net = FFNet.dense(in_features, cfg.hidden, goodness=cfg.goodness, threshold=cfg.threshold,
                      peer_norm=cfg.peer_norm, block_size=cfg.block_size).to(device)
    layers = list(range(cfg.eval_from_layer, len(cfg.hidden)))
    head = SoftmaxHead(sum(cfg.hidden[i] for i in layers), num_classes).to(device)
    opt = make_optimizer(net.parameters(), name=cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum,
                         weight_decay=cfg.weight_decay)
    head_opt = make_optimizer(head.parameters(), name=cfg.optimizer, lr=cfg.head_lr, momentum=cfg.momentum,
                              weight_decay=cfg.head_weight_decay)
    engine = supervised_engine(cfg.engine, cfg.compile, net, head, opt, head_opt, layers=layers,
                               num_classes=num_classes, rt=rt)
    cache = ProbabilityCache(cfg.neutral_every, num_classes, device)

    def setup(data: dict[str, torch.Tensor]) -> None:
        if cfg.neutral_every > 1:   # no cache (nor its bytes in every checkpoint) when unused
            cache.size(data["x_train"].shape[0])
            cache.sized = True

    def negatives(probs: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if cfg.negatives == "hard":
            return hard_wrong_labels(probs, y, generator=g)
        return uniform_wrong_labels(y, num_classes, generator=g)

    par = rt.parallel
    if par.mode == "data":   # every layer's running peer mean from the whole global batch
        distributed.average_peer_means([net], par)

    def step(x: torch.Tensor, y: torch.Tensor, g: torch.Generator, idx: torch.Tensor | None = None) -> torch.Tensor:
        if cfg.jitter:
            x = jitter(x, cfg.jitter, generator=g)
        # A data-parallel rank trains on its share of the global batch; the random draws below
        # are made for the whole batch on every rank, as one process would make them.
        mine = par.shard(x.shape[0]) if par.active else slice(None)
        inputs = engine.inputs(x[mine])         # the shared first-layer image product, or the images
        # The neutral pass trains the head and gives the hard-negative probabilities; with
        # neutral_every = k > 1 only on every k-th step (4 forward-equivalents instead of 5).
        stale = cache.stale(idx)
        if stale:
            probs = cache.get(idx)
        else:
            probs = distributed.gather_rows(engine.neutral(inputs, y[mine]), par)   # head gradients set
            cache.put(idx, probs)
        y_neg = negatives(probs, y, g)
        loss = engine.update(inputs, y[mine], y_neg[mine])   # FF gradients, the net's step
        if not stale:
            engine.head_step()
        return loss

    def evaluate(x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        preds = predict(net, head, x, layers=layers, per_label=cfg.per_label_eval, rt=rt,
                        num_classes=num_classes)
        return {f"error_{k}": (p != y).float().mean().item() for k, p in preds.items()}

    def finalize(run: runs.Run, data: dict[str, torch.Tensor]) -> None:
        save_goodness_samples(run, net, data["x_test"][:2000], data["y_test"][:2000], num_classes)

    def set_state(state: dict[str, Any]) -> None:
        cache.probs, cache.step = state["neg_probs"], int(state["step"])

    pipe = None
    if par.mode == "pipeline":
        pipe = SupervisedPipeline(net, head, opt, head_opt, layers=layers, num_classes=num_classes, rt=rt,
                                  cache=cache, lag=cfg.pipeline_lag, negatives=negatives,
                                  prepare=lambda x, g: jitter(x, cfg.jitter, generator=g) if cfg.jitter else x)
        step = pipe.step

    return Task(modules={"net": net, "head": head}, optimizers={"net": opt, "head": head_opt},
                base_lrs={"net": cfg.lr, "head": cfg.head_lr}, step=step, evaluate=evaluate,
                finalize=finalize, setup=setup, set_state=set_state,
                get_state=lambda: {"neg_probs": cache.probs.cpu(), "step": cache.step},
                info=({"engine": engine.name, "compile": str(engine.compiled).lower()} if pipe is None else
                      {"parallel": f"pipeline, layers {pipe.block.start}-{pipe.block.stop - 1} on this rank, "
                                   f"lag {pipe.lag}"}),
                engine=engine, begin_epoch=pipe and pipe.begin_epoch, end_epoch=pipe and pipe.end_epoch)


@torch.no_grad()
def predict(net: FFNet, head: SoftmaxHead | None, x: torch.Tensor, *, layers: list[int],
            per_label: bool, rt: Runtime | None = None, num_classes: int = 10, chunk: int = 1000,
            shared: bool = True) -> dict[str, torch.Tensor]:
    """Predictions (B,) by (a) per-label goodness and (b) one pass with the neutral label.

    (a) runs the net once per label and picks the label with the highest goodness summed over
    ``layers``; (b) feeds the neutral label and reads the softmax head. ``shared``: dense nets
    make the first layer's image product once for all labels (``dense.LabelledInput``). ``rt``
    gives the products' dtype (None: fp32).
    """
    rt = rt or Runtime(x.device)   # fp32
    out: dict[str, list[torch.Tensor]] = {"goodness": [], "onepass": []}
    share = shared and dense.supports(net)
    for s in range(0, x.shape[0], chunk):
        xb = x[s:s + chunk]
        b = xb.shape[0]
        with rt.autocast():
            if head is not None:
                hs = net(overlay_label(xb, None, num_classes))
                out["onepass"].append(head(net.features(hs, layers)).argmax(1))
            if per_label:
                if share:   # one image product for all C labels
                    hs = dense.LabelledInput(net, xb, num_classes, dtype=rt.product_dtype).forward_each_label()
                else:
                    labels = torch.arange(num_classes, device=x.device).repeat_interleave(b)  # (C*b,)
                    hs = net(overlay_label(xb.repeat(num_classes, 1), labels, num_classes))
                g = net.goodness(hs, layers).view(num_classes, b)
                out["goodness"].append(g.argmax(0))
    return {k: torch.cat(v) for k, v in out.items() if v}


@torch.no_grad()
def save_goodness_samples(run: runs.Run, net: FFNet, x: torch.Tensor, y: torch.Tensor, num_classes: int) -> None:
    """Per-layer goodness of positive (true label) and uniform-wrong-label negative test images,
    for ``fflab plot``."""
    g = torch.Generator(device=x.device).manual_seed(0)
    hs_pos = net(overlay_label(x, y, num_classes))
    hs_neg = net(overlay_label(x, uniform_wrong_labels(y, num_classes, generator=g), num_classes))
    write_goodness(run, net, hs_pos, hs_neg)
