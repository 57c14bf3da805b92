"""CIFAR-10 nets with local receptive fields and no weight sharing (the paper's "Experiments
with CIFAR-10" section, Table 1): the recurrent FF net with top-down input, and its backprop baseline.

Each hidden layer is a map of the image's size (32x32) with ``units_per_location`` ReLUs at each
location (3: 3072 units); a unit gets bottom-up input from a ``patch`` x ``patch`` field (11x11,
all channels; stride 1, zero padding patch//2) of the layer below at its own location and, in the
FF net, top-down input from the same field of the layer above; the last hidden layer's top-down
input is the label layer (dense 10 -> 3072, the one-hot normalized like every layer). The
dynamics, losses, hard negatives and both tests are those of ``recurrent.RecurrentFFNet`` (paper
section 4), which ``LocalRecurrentFFNet`` subclasses with ``LocalRecurrentLayer`` for its layers.
Tests: ``error_goodness`` (each label clamped for ``iterations`` iterations, goodness summed over
layers and averaged over ``eval_window``) and ``error_onepass`` (the softmax head on the bottom-up
pass); ``LocalBPConfig``/``build_bp`` is the same stack, feed-forward, trained by backprop.

``LocalLinear`` computes a locally connected map with tiled batched GEMMs (``impl="tiled"``): the
output map is cut into 8x8 tiles; each tile's inputs, an (8+patch-1)^2 window, are gathered once
and multiply a block-sparse (window x tile) matrix scattered from the per-location weights: ~2.7x
the useful multiply-adds at 11x11 fields, but in GEMMs of K=972, N=192. ``FFLocal``'s layouts,
``impl="dense"`` (8.5x the work, one 3072x3072 GEMM) and ``impl="bmm"`` (N = 3 columns, a 121x
patch copy), are slower (BENCHMARKS.md; ``benchmarks/cifar_local.py``). The operators are scattered once
per training step (``materialized``) and the clamped image's product is made once per step,
shared by the positive and negative runs and every iteration.
Engine: autograd only; the analytic ``shared`` engine (``fflab._engines.recurrent``) is written
for dense layers.

Not stated in the paper, chosen here: as ``recurrent.py`` (bottom-up initialization without
top-down input, the hard negatives' and one-pass test's softmax head on that pass, normalized
label layer, init N(0, 1/(2 fan-in)) per path with the full patch as fan-in); the image is
length-normalized as is (no mean subtraction); the BP baseline uses He init, the raw [0, 1]
pixels and no normalization between layers; optimizer, learning rates and epochs (the recipes).
Uncertain in the paper's text: the test window (iterations 4-6 of 10), hence ``eval_window``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import runs
from ..config import CommonConfig, HeadFields, ObjectiveFields, OptimizerFields, check_choice
from ..errors import ConfigError
from ..layers import FFLayer, normalize
from ..local import LOCAL_IMPLS, LocalLinear, materialized
from ..nets import SoftmaxHead
from ..optim import make_optimizer
from ..runtime import Runtime
from ..task import DataShape, Task
from ._common import check_eval_from_layer, jitter
from .backprop import bp_step
from .recurrent import RecurrentFFNet, make_step, predict, save_settling

__all__ = [
    "LocalRecurrentFFConfig", "LocalBPConfig", "LocalLinear", "LocalRecurrentLayer", "LocalRecurrentFFNet",
    "LocalBPNet", "materialized", "build", "build_bp", "IMPLS", "ENGINES",
]

IMPLS = LOCAL_IMPLS
ENGINES = ("auto", "autograd")
CIFAR_SHAPE = DataShape((3, 32, 32), 10)


@dataclass(frozen=True)
class LocalRecurrentFFConfig(ObjectiveFields, HeadFields, OptimizerFields, CommonConfig):
    """Recurrent FF net of locally connected layers with top-down input (CIFAR-10, Table 1)."""
    dataset: str = "cifar10"
    hidden_layers: int = 2                # 2 or 3 in the paper
    units_per_location: int = 3           # units at each location of a hidden map (3 x 32 x 32 = 3072)
    patch: int = 11                       # side of each unit's bottom-up and top-down field (odd)
    iterations: int = 10                  # damped synchronous iterations after the bottom-up init
    damping: float = 0.3                  # weight on the OLD state
    eval_window: tuple[int, ...] = (4, 6)  # test: goodness averaged over iterations a..b (1-based)
    eval_from_layer: int = 0              # test goodness summed over hidden layers [eval_from_layer:]
    negatives: str = "hard"               # hard (from the one-pass softmax) | uniform
    engine: str = "auto"                  # auto (= autograd) | autograd
    local_impl: str = "tiled"             # tiled (8x8 tiles, fastest) | dense (masked GEMM) | bmm (per location)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_geometry(self)


@dataclass(frozen=True)
class LocalBPConfig(OptimizerFields, CommonConfig):
    """Backprop baseline: the same locally connected layers, feed-forward, softmax on top (Table 1)."""
    dataset: str = "cifar10"
    hidden_layers: int = 2
    units_per_location: int = 3
    patch: int = 11
    local_impl: str = "tiled"
    lr_schedule: str = "cosine"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_geometry(self)


def _check_geometry(cfg) -> None:
    if cfg.hidden_layers < 1:
        raise ConfigError(f"hidden_layers={cfg.hidden_layers}: must be >= 1")
    if cfg.patch % 2 == 0:
        raise ConfigError(f"patch={cfg.patch}: must be odd (the field is centred on its unit's location)")
    check_choice("local_impl", cfg.local_impl, IMPLS)


# ----------------------------------------------------------------------------- the FF net
class LocalRecurrentLayer(FFLayer):
    """One hidden map of the recurrent net: ``relu(up(x_below) + down(x_above))``.

    ``up``: ``LocalLinear`` (with the bias) reading a ``patch`` field of the map below (or the
    image) at each location, stride 1, zero padding patch//2, so the map keeps the size below.
    ``down``: the same field of the map above (a (C, H, W) ``above``), or for the top layer a dense
    ``nn.Linear`` from the ``above`` label units. Same signatures as ``RecurrentFFLayer``.
    """

    def __init__(self, below: tuple[int, int, int], units_per_location: int, patch: int,
                 above: tuple[int, int, int] | int, *, impl: str = "tiled", goodness: str = "ssq",
                 threshold: float | None = None, peer_norm: float = 0.0, peer_momentum: float = 0.9) -> None:
        super().__init__()
        if patch % 2 == 0:
            raise ValueError(f"patch={patch} must be odd")
        k = dict(padding=patch // 2, impl=impl)
        self.up = LocalLinear(below, units_per_location, patch, bias=True,
                              std=1 / math.sqrt(2 * below[0] * patch * patch), **k)
        self.out_shape = self.up.out_shape
        units = self.up.out_features
        if isinstance(above, int):
            self.down: nn.Module = nn.Linear(above, units, bias=False)
            nn.init.normal_(self.down.weight, std=1 / math.sqrt(2 * above))
        else:
            self.down = LocalLinear(above, units_per_location, patch, bias=False,
                                    std=1 / math.sqrt(2 * above[0] * patch * patch), **k)
            if self.down.out_shape != self.out_shape:
                raise ValueError(f"the map above {tuple(above)} gives {self.down.out_shape}, not {self.out_shape}")
        self._init_objective(units, goodness, threshold, peer_norm, peer_momentum)

    def bottom_up(self, x_below: torch.Tensor) -> torch.Tensor:
        return F.relu(self.up(x_below))

    def forward(self, x_below: torch.Tensor, x_above: torch.Tensor) -> torch.Tensor:
        return F.relu(self.up(x_below) + self.down(x_above))

    def extra_repr(self) -> str:
        return (f"out_shape={self.out_shape}, goodness={self.goodness_name}, threshold={self.threshold:g}, "
                f"peer_norm={self.peer_norm:g}")


class LocalRecurrentFFNet(RecurrentFFNet):
    """``RecurrentFFNet`` (paper section 4) with ``hidden_layers`` locally connected maps of
    ``units_per_location`` x H x W units (the image's H x W). ``init_states``, ``label_input``,
    ``goodness``, ``features`` are RecurrentFFNet's; ``step`` and ``run`` are too, except that
    the first layer's product with the clamped image may be given (``image_term``) and ``run``
    makes it once for all iterations."""

    def __init__(self, image_shape: tuple[int, int, int], hidden_layers: int = 2, num_classes: int = 10, *,
                 units_per_location: int = 3, patch: int = 11, damping: float = 0.3, goodness: str = "ssq",
                 threshold: float | None = None, peer_norm: float = 0.0, impl: str = "tiled",
                 eps: float = 1e-8) -> None:
        nn.Module.__init__(self)
        if hidden_layers < 1:
            raise ValueError("the recurrent net needs at least one hidden layer")
        if not 0.0 <= damping <= 1.0:
            raise ValueError(f"damping={damping} must be in [0, 1] (the weight on the old state)")
        c, h, w = image_shape
        hidden_map = (units_per_location, h, w)
        self.layers = nn.ModuleList([
            LocalRecurrentLayer(tuple(image_shape) if i == 0 else hidden_map, units_per_location, patch,
                                num_classes if i == hidden_layers - 1 else hidden_map, impl=impl,
                                goodness=goodness, threshold=threshold, peer_norm=peer_norm)
            for i in range(hidden_layers)])
        self.in_features, self.num_classes = c * h * w, num_classes
        self.damping, self.eps = float(damping), eps

    def image_term(self, x: torch.Tensor) -> torch.Tensor:
        """The first layer's bottom-up input from the clamped image (B, D_0), before the ReLU."""
        return self.layers[0].up(normalize(x.detach(), self.eps))

    def step(self, states: list[torch.Tensor], x: torch.Tensor, top: torch.Tensor, *,
             image_term: torch.Tensor | None = None) -> list[torch.Tensor]:
        """``RecurrentFFNet.step``; with ``image_term`` (``self.image_term(x)``, rows as ``states``)
        the first layer uses it instead of multiplying the image again (same numbers)."""
        if image_term is None:
            return super().step(states, x, top)
        old = [h.detach() for h in states]
        normed = [None, *(normalize(h, self.eps) for h in old), top.detach()]
        new = []
        for i, layer in enumerate(self.layers):
            if i == 0:
                c = F.relu(image_term + layer.down(normed[2]))
            else:
                c = layer(normed[i], normed[i + 2])
            new.append(self.damping * old[i] + (1 - self.damping) * c)
        return new

    def run(self, x: torch.Tensor, labels: torch.Tensor | None, iterations: int, *,
            init: list[torch.Tensor] | None = None) -> list[list[torch.Tensor]]:
        """``RecurrentFFNet.run``, with the image's product made once."""
        states = self.init_states(x) if init is None else init
        top = self.label_input(labels, x.shape[0], x.device)
        image_term = self.image_term(x) if iterations else None
        out = [states]
        for _ in range(iterations):
            states = self.step(states, x, top, image_term=image_term)
            out.append(states)
        return out


@dataclass
class _BottomUp:
    image_term: torch.Tensor     # (B, D_0) W_0 norm(x) + b_0, with its graph: the gradient reaches W_0 once
    init: list[torch.Tensor]     # the states at t = 0 (detached)


class LocalRecurrentEngine:
    """The training step's FF part under autograd (same interface as ``recurrent_step.RecurrentEngine``):
    the image product is made once per step for the B images, shared by the bottom-up pass, the
    positive and negative runs and all iterations."""
    name = "autograd"

    def __init__(self, net: LocalRecurrentFFNet, iterations: int, rt: Runtime) -> None:
        self.net, self.iterations, self.rt = net, iterations, rt

    def bottom_up(self, x: torch.Tensor) -> _BottomUp:
        net = self.net
        with self.rt.autocast():
            a0 = net.image_term(x)
            with torch.no_grad():
                init = [F.relu(a0.detach())]
                for layer in net.layers[1:]:
                    init.append(layer.bottom_up(normalize(init[-1], net.eps)))
        return _BottomUp(a0, init)

    def ff_grads(self, bu: _BottomUp, x: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
        """top: (2B, N) the normalized label layer, positives first. Sets every layer's FF
        gradients summed over the iterations; returns the loss."""
        b, net = x.shape[0], self.net
        x_pn, image_term = torch.cat([x, x]), torch.cat([bu.image_term, bu.image_term])
        states = [torch.cat([h, h]) for h in bu.init]
        loss = torch.zeros((), device=x.device)
        for _ in range(self.iterations):
            with self.rt.autocast():
                states = net.step(states, x_pn, top, image_term=image_term)
            # split, not two slices: its backward is one concatenation of the halves' gradients
            loss = loss + sum(layer.local_loss(*h.split(b)) for layer, h in zip(net.layers, states))
        loss.backward()
        return loss.detach()


# ----------------------------------------------------------------------------- the FF task
def _check(cfg: LocalRecurrentFFConfig) -> tuple[int, int]:
    if len(cfg.eval_window) != 2 or not 1 <= cfg.eval_window[0] <= cfg.eval_window[1] <= cfg.iterations:
        raise ConfigError(f"eval_window={','.join(map(str, cfg.eval_window))} must be two iterations a,b "
                          f"with 1 <= a <= b <= iterations={cfg.iterations}")
    check_eval_from_layer(cfg.eval_from_layer, cfg.hidden_layers)
    check_choice("negatives", cfg.negatives, ("hard", "uniform"))
    check_choice("engine", cfg.engine, ENGINES)
    return cfg.eval_window[0], cfg.eval_window[1]


def build(cfg: LocalRecurrentFFConfig, rt: Runtime, shape: DataShape = CIFAR_SHAPE) -> Task:
    num_classes, device = shape.num_classes, rt.device
    window = _check(cfg)
    try:
        net = LocalRecurrentFFNet(shape.image_shape, cfg.hidden_layers, num_classes,
                                  units_per_location=cfg.units_per_location, patch=cfg.patch, damping=cfg.damping,
                                  goodness=cfg.goodness, threshold=cfg.threshold, peer_norm=cfg.peer_norm,
                                  impl=cfg.local_impl).to(device)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    head = SoftmaxHead(sum(net.widths), num_classes).to(device)
    layers = list(range(cfg.eval_from_layer, cfg.hidden_layers))
    opt = make_optimizer(net.parameters(), name=cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum,
                         weight_decay=cfg.weight_decay)
    head_opt = make_optimizer(head.parameters(), name=cfg.optimizer, lr=cfg.head_lr, momentum=cfg.momentum,
                              weight_decay=cfg.head_weight_decay)
    engine = LocalRecurrentEngine(net, cfg.iterations, rt)

    # each layer's weights laid out for its products once per step, not once per product
    step = make_step(cfg, net, head, engine, opt, head_opt, num_classes=num_classes, device=device,
                     scope=lambda: materialized(net))

    @torch.no_grad()
    def evaluate(x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        with materialized(net):
            preds = predict(net, head, x, iterations=cfg.iterations, window=window, layers=layers, chunk=100,
                            rt=rt, shared=False)
        return {f"error_{k}": (p != y).float().mean().item() for k, p in preds.items()}

    @torch.no_grad()
    def finalize(run: runs.Run, data: dict[str, torch.Tensor]) -> None:
        with materialized(net):
            save_settling(run.path, net, data["x_test"][:1000], data["y_test"][:1000], iterations=cfg.iterations,
                          window=window, layers=layers, rt=rt, shared=False)

    return Task(modules={"net": net, "head": head}, optimizers={"net": opt, "head": head_opt},
                base_lrs={"net": cfg.lr, "head": cfg.head_lr}, step=step, evaluate=evaluate, finalize=finalize,
                info={"engine": engine.name, "local_impl": cfg.local_impl}, engine=engine)


# ----------------------------------------------------------------------------- the backprop baseline
class LocalBPNet(nn.Module):
    """``hidden_layers`` locally connected ReLU maps (as the FF net's bottom-up path), then a
    linear softmax layer: (B, C*H*W) -> (B, N) logits. He init."""

    def __init__(self, image_shape: tuple[int, int, int], hidden_layers: int = 2, num_classes: int = 10, *,
                 units_per_location: int = 3, patch: int = 11, impl: str = "tiled") -> None:
        super().__init__()
        if patch % 2 == 0:
            raise ValueError(f"patch={patch} must be odd")
        maps = [tuple(image_shape)] + [(units_per_location, *image_shape[1:])] * hidden_layers
        self.layers = nn.ModuleList([
            LocalLinear(maps[i], units_per_location, patch, padding=patch // 2, impl=impl,
                        std=math.sqrt(2 / (maps[i][0] * patch * patch))) for i in range(hidden_layers)])
        self.out = nn.Linear(self.layers[-1].out_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = F.relu(layer(x))
        return self.out(x)


def build_bp(cfg: LocalBPConfig, rt: Runtime, shape: DataShape = CIFAR_SHAPE) -> Task:
    try:
        model = LocalBPNet(shape.image_shape, cfg.hidden_layers, shape.num_classes,
                           units_per_location=cfg.units_per_location, patch=cfg.patch,
                           impl=cfg.local_impl).to(rt.device)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    opt = make_optimizer(model.parameters(), name=cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum,
                         weight_decay=cfg.weight_decay)

    def step(x: torch.Tensor, y: torch.Tensor, g: torch.Generator, idx: torch.Tensor | None = None) -> torch.Tensor:
        if cfg.jitter:
            x = jitter(x, cfg.jitter, generator=g)
        return bp_step(model, opt, x, y, rt)   # each layer's operator is used once: nothing to cache

    @torch.no_grad()
    def evaluate(x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        wrong = torch.zeros((), device=x.device)
        with materialized(model):
            for s in range(0, x.shape[0], 500):
                with rt.autocast():
                    wrong += (model(x[s:s + 500]).argmax(1) != y[s:s + 500]).sum()
        return {"error": (wrong / max(x.shape[0], 1)).item()}

    return Task(modules={"model": model}, optimizers={"model": opt}, base_lrs={"model": cfg.lr},
                step=step, evaluate=evaluate, info={"local_impl": cfg.local_impl})
