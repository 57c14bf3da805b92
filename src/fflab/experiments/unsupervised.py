"""Unsupervised FF with hybrid negatives and a linear readout (paper section 3.2).

The FF stack never sees a label. Per minibatch of real images ``x``:

- positive data ``x_pos = x``; negative data ``x_neg`` = hybrid images ``mask * A + (1 - mask) * B``
  of two different real images of the batch (``fflab.hybrid.hybrid_negatives``, ``blur_passes``
  blur passes of the mask);
- one batched forward of ``cat([x_pos, x_neg])`` (B + B cases) through the FF stack (``FFNet``:
  the input is length-normalized, each layer reads the normalized, detached output of the layer
  below), and the sum of the layers' local losses (FF loss plus optional peer normalization);
- at the same time a linear softmax classifier (``SoftmaxHead``) learns to read the class from
  the *detached* normalized activities of the positive pass. It is the only supervised part and
  no gradient from it reaches the FF layers (``FFNet.features`` and ``SoftmaxHead`` both detach).

Readout layers (``readout_layers``, 0-based hidden-layer indices): the paper reads the last three
of four hidden layers, (1, 2, 3), and reports that including the first hidden layer makes the
readout worse. A second head on *all* hidden layers (``readout_all_layers``, on by default) is
trained alongside, so every run measures that comparison: evaluation keys ``error_readout``
(the configured layers) and ``error_readout_all_layers``.

Architectures (``architecture``):

- ``dense``: fully connected ``FFDense`` layers of widths ``hidden`` (paper: 4 x 2000, 1.37%);
- ``local``: locally connected ``FFLocal`` layers, no weight sharing (paper: with peer
  normalization, 1.16% after 60 epochs). The geometry is not stated in the paper for MNIST; the
  defaults are ``fflab.local.MNIST_LOCAL_LAYERS`` (11x11 fields with stride 2 on the image, then
  5x5 fields with stride 1 on 10 x 14 x 14 maps: 1960 units per layer, see ``fflab.local``), given
  per layer by the config keys ``units_per_location``, ``patch``, ``stride`` and ``padding``, which
  ``fflab plot`` reads to draw the first layer's receptive fields. ``hidden`` is not used.

Choices not stated in the paper:
- ``blur_passes = 6``: measured with ``fflab.hybrid.compare_blur_passes`` on 28x28 masks,
  6 passes give neighbour agreement 0.877 and a mean run of 6.5 pixels (regions of stroke size and
  larger, every mask still mixing both images); the table is in ``fflab.hybrid``'s docstring.
- A and B are different *images*, not necessarily of different classes (``pair_by_label=False``):
  requiring different classes would use labels in the unsupervised part. ``pair_by_label=True``
  is there for comparison.
- Optimizer: Adam (the paper gives none for this model); the config default is lr 1e-3 for the FF
  layers and the readout, the dense recipe uses 1e-4 for the FF layers (dead units, RESULTS.md).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import runs
from ..config import CommonConfig, HeadFields, ObjectiveFields, OptimizerFields
from ..errors import ConfigError
from ..hybrid import hybrid_negatives
from ..local import MNIST_LOCAL_LAYERS, local_stack
from ..nets import FFNet, SoftmaxHead
from ..optim import make_optimizer
from ..runtime import Runtime
from ..task import MNIST_SHAPE, DataShape, Task
from ._common import jitter, write_goodness

__all__ = ["UnsupervisedFFConfig", "build_net", "build", "readout_predict", "dead_units",
           "forward_chunks", "ActiveUnits", "save_hybrid_goodness_samples"]



def _per_layer(key: str) -> tuple[int, ...]:
    return tuple(spec[key] for spec in MNIST_LOCAL_LAYERS)


@dataclass(frozen=True)
class UnsupervisedFFConfig(ObjectiveFields, HeadFields, OptimizerFields, CommonConfig):
    """Unsupervised FF with hybrid negatives and a linear readout (paper section 3.2). The head
    group is the readout's."""
    architecture: str = "dense"               # dense | local (locally connected FFLocal layers)
    hidden: tuple[int, ...] = (2000, 2000, 2000, 2000)   # dense widths (architecture=dense only)
    # Local geometry (architecture=local only), one entry per hidden layer; default MNIST_LOCAL_LAYERS.
    units_per_location: tuple[int, ...] = _per_layer("units_per_location")
    patch: tuple[int, ...] = _per_layer("patch")
    stride: tuple[int, ...] = _per_layer("stride")
    padding: tuple[int, ...] = _per_layer("padding")
    local_impl: str = "dense"                 # dense (one masked GEMM, faster on CPU) | bmm (per-location GEMMs)
    blur_passes: int = 6                      # hybrid mask blur passes (measured choice, see module doc)
    pair_by_label: bool = False               # hybrids of different classes (uses labels; off = unsupervised)
    readout_layers: tuple[int, ...] = (1, 2, 3)   # 0-based hidden layers the readout reads (paper: last 3 of 4)
    readout_all_layers: bool = True           # also train a head on all layers (error_readout_all_layers)


def build_net(cfg: UnsupervisedFFConfig, shape: DataShape = MNIST_SHAPE) -> FFNet:
    """The FF stack of ``cfg`` (on the CPU) for images of ``shape``: dense widths ``hidden`` or
    the local geometry."""
    objective = dict(goodness=cfg.goodness, threshold=cfg.threshold, peer_norm=cfg.peer_norm)
    if cfg.architecture == "dense":
        if not cfg.hidden:
            raise ConfigError("hidden: give at least one hidden layer width")
        return FFNet.dense(shape.in_features, cfg.hidden, **objective)
    if cfg.architecture == "local":
        geo = dict(units_per_location=cfg.units_per_location, patch=cfg.patch,
                   stride=cfg.stride, padding=cfg.padding)
        n = {len(v) for v in geo.values()}
        if len(n) != 1 or 0 in n:
            raise ConfigError("units_per_location, patch, stride and padding need one entry per "
                              f"hidden layer, the same number each; got {geo}")
        specs = tuple(dict(zip(geo, values)) for values in zip(*geo.values()))
        try:
            return FFNet(local_stack(shape.image_shape, specs, impl=cfg.local_impl, **objective))
        except ValueError as e:
            raise ConfigError(str(e)) from None
    raise ConfigError(f"architecture={cfg.architecture!r}: choose dense or local")


def _check_layers(name: str, layers: tuple[int, ...], depth: int) -> list[int]:
    if not layers:
        raise ConfigError(f"{name}: give at least one hidden layer index")
    if len(set(layers)) != len(layers) or not all(0 <= i < depth for i in layers):
        raise ConfigError(f"{name}={layers}: distinct 0-based indices below the number of hidden "
                          f"layers ({depth})")
    return list(layers)


def forward_chunks(net: FFNet, x: torch.Tensor, *, chunk: int = 1000,
                   rt: Runtime | None = None) -> Iterator[list[torch.Tensor]]:
    """Activities of every layer for images x, one chunk of images at a time (no gradient);
    ``rt`` gives the products' dtype (None: fp32)."""
    rt = rt or Runtime(x.device)
    for s in range(0, x.shape[0], chunk):
        with torch.no_grad(), rt.autocast():
            hs = net(x[s:s + chunk])
        yield hs


class ActiveUnits:
    """Which units of each layer were active (ReLU output > 0) on at least one image seen so far.

    A unit that is never active gets no FF gradient, so it never comes back; in the dense 4x2000
    net most units of the upper layers die in the first few hundred steps at Adam lr 1e-3
    (RESULTS.md), which is why every evaluation reports the dead fraction.
    """

    def __init__(self) -> None:
        self.ever: list[torch.Tensor] | None = None

    def update(self, hs: list[torch.Tensor]) -> None:
        active = [h.reshape(h.shape[0], -1).gt(0).any(0) for h in hs]
        self.ever = active if self.ever is None else [e | a for e, a in zip(self.ever, active)]

    def dead_fractions(self) -> list[float]:
        return [1.0 - e.float().mean().item() for e in self.ever or []]


@torch.no_grad()
def readout_predict(net: FFNet, heads: dict[str, tuple[SoftmaxHead, list[int]]], x: torch.Tensor, *,
                    chunk: int = 1000, rt: Runtime | None = None,
                    active: ActiveUnits | None = None) -> dict[str, torch.Tensor]:
    """Class predictions (N,) of each readout head ``name -> (head, layers)`` for images x (N, 784);
    ``active``, if given, is updated with the same forward passes."""
    out: dict[str, list[torch.Tensor]] = {name: [] for name in heads}
    for hs in forward_chunks(net, x, chunk=chunk, rt=rt):
        if active is not None:
            active.update(hs)
        for name, (head, layers) in heads.items():
            out[name].append(head(net.features(hs, layers)).argmax(1))
    return {name: torch.cat(p) for name, p in out.items()}


def dead_units(net: FFNet, x: torch.Tensor, *, chunk: int = 1000, rt: Runtime | None = None) -> list[float]:
    """Per hidden layer, the fraction of units inactive (ReLU output 0) on every image of x."""
    acc = ActiveUnits()
    for hs in forward_chunks(net, x, chunk=chunk, rt=rt):
        acc.update(hs)
    return acc.dead_fractions()


@torch.no_grad()
def save_hybrid_goodness_samples(run: runs.Run, net: FFNet, x: torch.Tensor, *, blur_passes: int,
                                 image_shape: tuple[int, int, int] = MNIST_SHAPE.image_shape,
                                 seed: int = 0) -> None:
    """Per-layer goodness of real test images (positive) and of hybrids made from them (negative),
    for ``fflab plot`` (goodness.safetensors: pos.{layer}, neg.{layer}, threshold.{layer})."""
    g = torch.Generator(device=x.device).manual_seed(seed)
    x_neg = hybrid_negatives(x.view(-1, *image_shape), generator=g, blur_passes=blur_passes)[0].view(x.shape)
    write_goodness(run, net, net(x), net(x_neg))


def build(cfg: UnsupervisedFFConfig, rt: Runtime, shape: DataShape = MNIST_SHAPE) -> Task:
    device = rt.device
    net = build_net(cfg, shape).to(device)
    depth = len(net.layers)
    # name -> (head, hidden layers it reads); "readout" is the configured one.
    heads: dict[str, tuple[SoftmaxHead, list[int]]] = {}
    layer_sets = {"readout": _check_layers("readout_layers", cfg.readout_layers, depth)}
    if cfg.readout_all_layers:
        layer_sets["readout_all_layers"] = list(range(depth))
    for name, layers in layer_sets.items():
        heads[name] = (SoftmaxHead(sum(net.widths[i] for i in layers), shape.num_classes).to(device), layers)
    opt = make_optimizer(net.parameters(), name=cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum,
                         weight_decay=cfg.weight_decay)
    head_params = [p for head, _ in heads.values() for p in head.parameters()]
    head_opt = make_optimizer(head_params, name=cfg.optimizer, lr=cfg.head_lr, momentum=cfg.momentum,
                              weight_decay=cfg.head_weight_decay)

    def step(x: torch.Tensor, y: torch.Tensor, g: torch.Generator, idx: torch.Tensor | None = None) -> torch.Tensor:
        b = x.shape[0]
        if b < 2:  # a hybrid needs two different images (only a last batch of 1 can be this small)
            return torch.zeros((), device=x.device)
        if cfg.jitter:
            x = jitter(x, cfg.jitter, generator=g)
        # one mask per image, shared by its channels: the images as (B, C, H, W)
        x_neg = hybrid_negatives(x.view(b, *shape.image_shape), generator=g, blur_passes=cfg.blur_passes,
                                 labels=y if cfg.pair_by_label else None)[0].view(b, -1)
        # Positive and negative passes as one batched product per layer: (2B, 784) -> [(2B, D_l)].
        with rt.autocast():
            hs = net(torch.cat([x, x_neg]))
        hs_pos = [h[:b] for h in hs]
        loss = torch.stack(net.local_losses(hs_pos, [h[b:] for h in hs])).sum()
        # The readout: detached features of the positive pass, true labels (the only supervision).
        readout_loss = sum(F.cross_entropy(head(net.features(hs_pos, layers)), y)
                           for head, layers in heads.values())
        opt.zero_grad(set_to_none=True)
        head_opt.zero_grad(set_to_none=True)
        (loss + readout_loss).backward()
        opt.step()
        head_opt.step()
        return loss.detach()

    def evaluate(x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        active = ActiveUnits()   # counted in the readout's forward passes, not in passes of its own
        preds = readout_predict(net, heads, x, rt=rt, active=active)
        out = {f"error_{name}": (p != y).float().mean().item() for name, p in preds.items()}
        out.update({f"dead_units_layer{i}": f for i, f in enumerate(active.dead_fractions())})
        return out

    def finalize(run: runs.Run, data: dict[str, torch.Tensor]) -> None:
        save_hybrid_goodness_samples(run, net, data["x_test"][:2000], blur_passes=cfg.blur_passes,
                                     image_shape=shape.image_shape)

    modules: dict[str, nn.Module] = {"net": net, **{name: head for name, (head, _) in heads.items()}}
    return Task(modules=modules, optimizers={"net": opt, "readout": head_opt},
                base_lrs={"net": cfg.lr, "readout": cfg.head_lr}, step=step, evaluate=evaluate,
                finalize=finalize, extra={"heads": heads})
