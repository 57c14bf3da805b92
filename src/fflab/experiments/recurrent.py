"""Recurrent FF with top-down effects (paper section 4, "top-down effects in perception").

A static image is treated as a boring video. The layers are: the pixel image (bottom), L hidden
layers of ReLUs, and a one-of-N label layer (top). The hidden layers are first initialized by one
bottom-up pass; then every hidden layer is updated synchronously for T iterations, each reading the
*normalized* activities of the layer below and the layer above at the previous time step:

    c_l(t) = relu(W_l norm(h_{l-1}(t-1)) + V_l norm(h_{l+1}(t-1)) + b_l)
    h_l(t) = damping * h_l(t-1) + (1 - damping) * c_l(t)        (paper: 0.3 old, 0.7 new)

with h_0 = the image and h_{L+1} = the label (one-hot, or ten entries of 0.1 for the neutral
label), both clamped. ``damping`` is the weight on the OLD state: damping=1 freezes the net at its
bottom-up initialization, damping=0 is the undamped synchronous update. The FF objective is
applied to every hidden layer's pre-normalized state h_l(t) at every iteration t = 1..T (positive:
the image with its true label at the top; negative: the same image with a wrong label), and all
inputs from t-1 are detached: no derivative crosses a layer or a time step, every update is local.

Training runs on ``fflab._engines.recurrent`` (``engine=shared``, what ``auto`` picks): the same
update computed without autograd, with the clamped image's product shared by the positive and
negative runs and the iterations; ``engine=autograd`` is the reference (BENCHMARKS.md has both).

Test: for each label run T iterations and choose the label whose goodness (summed over the
hidden layers, averaged over the iterations of ``eval_window``; paper: 8 iterations, window 3-5)
is highest. The error after each single iteration k is reported as ``error_iter{k}`` so that
``fflab plot`` can draw how settling helps (iterations.png), and ``save_settling`` (with
``fflab.plot.plot_settling``) records and draws the goodness of each layer at each iteration for the correct
label against the wrong ones (settling.safetensors, settling.png).

Both signs of goodness work: ``goodness=min_ssq`` (positive data should have LOW activity) is the
predictive-coding case, where the top-down input learns to cancel the bottom-up input on positive
data (paper section 4).

Not stated in the paper, chosen here:
- the bottom-up initialization pass uses the bottom-up weights only (no top-down input, so the
  top hidden layer does not see the label yet): the initial state is the same for every label,
  so it is computed once per image and shared by the positive, the negative and the ten test runs;
  the FF loss starts at iteration 1 (at iteration 0 positive and negative states are identical);
- "a single forward pass through the net to get probabilities for all the classes" (for hard
  negatives) is that bottom-up pass, read by a linear softmax head trained (cross-entropy, on
  detached normalized activities of all hidden layers) during training. It is also reported as
  the cheap one-pass test, ``error_onepass``;
- the label layer is length-normalized like every other layer before it feeds the top hidden
  layer (a one-hot becomes sqrt(N) at one entry, the neutral label all ones);
- initialization: bottom-up W ~ N(0, 1/(2 fan_in_below)), top-down V ~ N(0, 1/(2 fan_in_above)),
  so each path starts with half the input variance; biases 0;
- goodness at test time is summed over hidden layers [eval_from_layer:] (default: all);
- the paper says "two or three" hidden layers of 2000; the recipe uses two (``hidden=2000x3``
  for three).
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .. import runs
from .._engines import recurrent as shared_engine
from .._engines.recurrent_step import ENGINES, recurrent_engine
from ..config import CommonConfig, HeadFields, ObjectiveFields, OptimizerFields, check_choice
from ..errors import ConfigError
from ..layers import FFLayer, normalize
from ..negatives import NEUTRAL_LABEL, hard_wrong_labels, uniform_wrong_labels
from ..nets import SoftmaxHead
from ..optim import make_optimizer
from ..runtime import Runtime
from ..task import MNIST_SHAPE, DataShape, Task
from ._common import check_eval_from_layer, jitter

__all__ = [
    "RecurrentFFConfig", "RecurrentFFLayer", "RecurrentFFNet", "build", "label_goodness",
    "predict", "save_settling", "SETTLING_FILE",
]

SETTLING_FILE = runs.SETTLING_FILE


@dataclass(frozen=True)
class RecurrentFFConfig(ObjectiveFields, HeadFields, OptimizerFields, CommonConfig):
    """Recurrent FF net with top-down input from the label layer (paper section 4)."""
    hidden: tuple[int, ...] = (2000, 2000)
    iterations: int = 8                   # damped synchronous iterations after the bottom-up init (train and test)
    damping: float = 0.3                  # weight on the OLD state: h <- damping*h + (1-damping)*computed
    eval_window: tuple[int, ...] = (3, 5)  # test: goodness averaged over iterations a..b (inclusive, 1-based)
    eval_from_layer: int = 0              # test goodness summed over hidden layers [eval_from_layer:]
    negatives: str = "hard"               # hard (from the one-pass softmax) | uniform
    engine: str = "auto"                  # auto (= shared) | shared (analytic, shared clamped inputs) | autograd


# ----------------------------------------------------------------------------- the net
class RecurrentFFLayer(FFLayer):
    """One hidden layer of the recurrent net: ``relu(x_below W^T + x_above V^T + b)``.

    (B, below), (B, above) -> (B, units), the pre-normalization activities. ``weight`` (W) is the
    bottom-up weight (named as in FFDense, so receptive-field plots find the first layer's),
    ``weight_down`` (V) the top-down one. Goodness, threshold and local loss come from FFLayer.
    """

    def __init__(self, below: int, units: int, above: int, *, goodness: str = "ssq",
                 threshold: float | None = None, peer_norm: float = 0.0, peer_momentum: float = 0.9) -> None:
        super().__init__()
        self.below, self.units, self.above = below, units, above
        # Each path starts with half of the unit-variance input a single-input FF layer gets.
        self.weight = nn.Parameter(torch.randn(units, below) / math.sqrt(2 * below))
        self.weight_down = nn.Parameter(torch.randn(units, above) / math.sqrt(2 * above))
        self.bias = nn.Parameter(torch.zeros(units))
        self._init_objective(units, goodness, threshold, peer_norm, peer_momentum)

    def bottom_up(self, x_below: torch.Tensor) -> torch.Tensor:
        """(B, below) -> (B, units): the initialization pass, no top-down input."""
        return F.relu(F.linear(x_below, self.weight, self.bias))

    def forward(self, x_below: torch.Tensor, x_above: torch.Tensor) -> torch.Tensor:
        """(B, below), (B, above) -> (B, units): the state this layer computes from its neighbours."""
        return F.relu(F.linear(x_below, self.weight, self.bias) + F.linear(x_above, self.weight_down))

    def extra_repr(self) -> str:
        return (f"below={self.below}, units={self.units}, above={self.above}, goodness={self.goodness_name}, "
                f"threshold={self.threshold:g}, peer_norm={self.peer_norm:g}")


class RecurrentFFNet(nn.Module):
    """Pixel layer, hidden layers ``hidden``, label layer; synchronous damped updates (section 4).

    States are lists of per-layer pre-normalization activities ``[h_1 (B, D_1), ..., h_L (B, D_L)]``.
    ``damping`` is the weight on the old state (paper 0.3); it is a plain attribute (from the
    config), not part of the state dict.
    """

    def __init__(self, in_features: int, hidden: Sequence[int], num_classes: int = 10, *,
                 damping: float = 0.3, goodness: str = "ssq", threshold: float | None = None,
                 peer_norm: float = 0.0, eps: float = 1e-8) -> None:
        super().__init__()
        if not hidden:
            raise ValueError("the recurrent net needs at least one hidden layer")
        if not 0.0 <= damping <= 1.0:
            raise ValueError(f"damping={damping} must be in [0, 1] (the weight on the old state)")
        sizes = [in_features, *hidden, num_classes]
        self.layers = nn.ModuleList([
            RecurrentFFLayer(sizes[i], sizes[i + 1], sizes[i + 2], goodness=goodness, threshold=threshold,
                             peer_norm=peer_norm) for i in range(len(hidden))])
        self.in_features, self.num_classes = in_features, num_classes
        self.damping = float(damping)
        self.eps = eps

    @property
    def widths(self) -> list[int]:
        return [layer.num_units for layer in self.layers]

    def label_input(self, labels: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
        """The top layer's normalized activity: (B, N) from labels (B,) int, or the neutral label."""
        if labels is None:
            top = torch.full((batch, self.num_classes), NEUTRAL_LABEL, device=device)
        else:
            top = F.one_hot(labels, self.num_classes).float()
        return normalize(top, self.eps)

    @torch.no_grad()
    def init_states(self, x: torch.Tensor) -> list[torch.Tensor]:
        """One bottom-up pass from the image (B, in): the states at t = 0 (label independent, no grad)."""
        states = []
        below = normalize(x, self.eps)
        for layer in self.layers:
            h = layer.bottom_up(below)
            states.append(h)
            below = normalize(h, self.eps)
        return states

    def step(self, states: list[torch.Tensor], x: torch.Tensor, top: torch.Tensor) -> list[torch.Tensor]:
        """One synchronous damped iteration: states at t-1 -> states at t.

        ``x`` (B, in) is the image, ``top`` (B, N) the normalized label layer (``label_input``).
        Every input (the image, the label, the neighbours' normalized states at t-1 and the layer's
        own old state) is detached, so a loss on h_l(t) moves only layer l's weights, through this step alone.
        """
        old = [h.detach() for h in states]
        normed = [normalize(x.detach(), self.eps), *(normalize(h, self.eps) for h in old), top.detach()]
        new = []
        for i, layer in enumerate(self.layers):
            c = layer(normed[i], normed[i + 2])  # below: layer i-1 (or the image), above: i+1 (or the label)
            # damping=1 gives exactly the old state (0 * c adds zero), and no gradient to any weight.
            new.append(self.damping * old[i] + (1 - self.damping) * c)
        return new

    def run(self, x: torch.Tensor, labels: torch.Tensor | None, iterations: int, *,
            init: list[torch.Tensor] | None = None) -> list[list[torch.Tensor]]:
        """States at t = 0..iterations: a list of ``iterations + 1`` per-layer state lists.

        x: (B, in); labels: (B,) int, or None for the neutral label; ``init``: precomputed t = 0
        states (``init_states(x)``), shared e.g. by the ten labels of a test image.
        """
        states = self.init_states(x) if init is None else init
        top = self.label_input(labels, x.shape[0], x.device)
        out = [states]
        for _ in range(iterations):
            states = self.step(states, x, top)
            out.append(states)
        return out

    def goodness(self, states: list[torch.Tensor]) -> torch.Tensor:
        """Per-layer goodness of one time step's states: (B, L)."""
        return torch.stack([layer.goodness(h) for layer, h in zip(self.layers, states)], dim=-1)

    def features(self, states: list[torch.Tensor]) -> torch.Tensor:
        """Normalized activities of all hidden layers, concatenated and detached: (B, sum D)."""
        return torch.cat([normalize(h.float(), self.eps) for h in states], dim=-1).detach()


# ----------------------------------------------------------------------------- evaluation
@torch.no_grad()
def label_goodness(net: RecurrentFFNet, x: torch.Tensor, iterations: int, *, chunk: int = 500,
                   rt: Runtime | None = None, shared: bool = True) -> torch.Tensor:
    """Goodness of every hidden layer at every iteration for every label: (B, N, T+1, L).

    For each image the net is run ``iterations`` times with each of the N labels clamped at the
    top (index 0 on the T+1 axis is the label-independent bottom-up initialization).
    ``shared``: one image product per image for all N labels (``fflab._engines.recurrent``);
    otherwise the plain ``RecurrentFFNet.run`` under autocast. Same numbers up to rounding.
    ``rt`` gives the products' dtype (None: fp32).
    """
    n_cls = net.num_classes
    rt = rt or Runtime(x.device)
    pdtype = rt.product_dtype
    out = []
    for s in range(0, x.shape[0], chunk):
        xb = x[s:s + chunk]
        b = xb.shape[0]
        labels = torch.arange(n_cls, device=x.device).repeat_interleave(b)       # (N*b,) label-major
        if shared:
            bu = shared_engine.bottom_up(net, xb, pdtype)
            top = net.label_input(labels, n_cls * b, x.device)
            traj = [[h.repeat(n_cls, 1) for h in bu.init]]
            traj += [h for _, _, h in shared_engine.trajectory(net, bu, top, iterations, pdtype)]
            g = torch.stack([net.goodness(st) for st in traj], dim=1)
        else:
            with rt.autocast():
                init = net.init_states(xb)
                traj = net.run(xb.repeat(n_cls, 1), labels, iterations, init=[h.repeat(n_cls, 1) for h in init])
                g = torch.stack([net.goodness(st) for st in traj], dim=1)      # (N*b, T+1, L)
        out.append(g.float().view(n_cls, b, iterations + 1, -1).transpose(0, 1))
    return torch.cat(out)


@torch.no_grad()
def predict(net: RecurrentFFNet, head: SoftmaxHead | None, x: torch.Tensor, *, iterations: int,
            window: tuple[int, int], layers: Sequence[int], chunk: int = 500,
            rt: Runtime | None = None, shared: bool = True) -> dict[str, torch.Tensor]:
    """Predicted labels (B,) under several tests.

    ``goodness``: highest goodness summed over ``layers`` and averaged over iterations
    window[0]..window[1] (inclusive, 1-based); ``iter{k}``: the same after iteration k alone;
    ``onepass``: the softmax head on the bottom-up pass (if ``head`` is given).
    """
    a, b = window
    rt = rt or Runtime(x.device)
    preds: dict[str, list[torch.Tensor]] = {}
    for s in range(0, x.shape[0], chunk):
        xb = x[s:s + chunk]
        g = label_goodness(net, xb, iterations, chunk=chunk, rt=rt,
                           shared=shared)[..., list(layers)].sum(-1)                                # (b, N, T+1)
        preds.setdefault("goodness", []).append(g[:, :, a:b + 1].mean(-1).argmax(1))
        for k in range(1, iterations + 1):
            preds.setdefault(f"iter{k}", []).append(g[:, :, k].argmax(1))
        if head is not None:
            with rt.autocast():
                preds.setdefault("onepass", []).append(head(net.features(net.init_states(xb))).argmax(1))
    return {k: torch.cat(v) for k, v in preds.items()}


# ----------------------------------------------------------------------------- the task
def _check(cfg: RecurrentFFConfig) -> tuple[int, int]:
    # iterations >= 1 and damping in [0, 1]: config.check_ranges, when the config is made
    if len(cfg.eval_window) != 2 or not 1 <= cfg.eval_window[0] <= cfg.eval_window[1] <= cfg.iterations:
        raise ConfigError(f"eval_window={','.join(map(str, cfg.eval_window))} must be two iterations a,b "
                          f"with 1 <= a <= b <= iterations={cfg.iterations}")
    check_eval_from_layer(cfg.eval_from_layer, len(cfg.hidden))
    check_choice("negatives", cfg.negatives, ("hard", "uniform"))
    check_choice("engine", cfg.engine, ENGINES)
    return cfg.eval_window[0], cfg.eval_window[1]


def build(cfg: RecurrentFFConfig, rt: Runtime, shape: DataShape = MNIST_SHAPE) -> Task:
    num_classes, in_features, device = shape.num_classes, shape.in_features, rt.device
    window = _check(cfg)
    try:
        net = RecurrentFFNet(in_features, cfg.hidden, num_classes, damping=cfg.damping, goodness=cfg.goodness,
                             threshold=cfg.threshold, peer_norm=cfg.peer_norm).to(device)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    head = SoftmaxHead(sum(cfg.hidden), num_classes).to(device)
    layers = list(range(cfg.eval_from_layer, len(cfg.hidden)))
    opt = make_optimizer(net.parameters(), name=cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum,
                         weight_decay=cfg.weight_decay)
    head_opt = make_optimizer(head.parameters(), name=cfg.optimizer, lr=cfg.head_lr, momentum=cfg.momentum,
                              weight_decay=cfg.head_weight_decay)

    engine = recurrent_engine(cfg.engine, net, cfg.iterations, rt)
    shared = engine.name == "shared"
    step = make_step(cfg, net, head, engine, opt, head_opt, num_classes=num_classes, device=device)

    def evaluate(x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        preds = predict(net, head, x, iterations=cfg.iterations, window=window, layers=layers, rt=rt,
                        shared=shared)
        wrong = {k: (p != y).float().mean() for k, p in preds.items()}
        return {f"error_{k}": v.item() for k, v in wrong.items()}

    def finalize(run: runs.Run, data: dict[str, torch.Tensor]) -> None:
        save_settling(run.path, net, data["x_test"][:1000], data["y_test"][:1000], iterations=cfg.iterations,
                      window=window, layers=layers, rt=rt, shared=shared)

    return Task(modules={"net": net, "head": head}, optimizers={"net": opt, "head": head_opt},
                base_lrs={"net": cfg.lr, "head": cfg.head_lr}, step=step, evaluate=evaluate,
                finalize=finalize, info={"engine": engine.name}, engine=engine)


def make_step(cfg, net: RecurrentFFNet, head: SoftmaxHead, engine, opt: torch.optim.Optimizer,
              head_opt: torch.optim.Optimizer, *, num_classes: int, device: torch.device,
              scope: Callable[[], AbstractContextManager] = contextlib.nullcontext) -> Callable[..., torch.Tensor]:
    """The training step of a recurrent FF net (this module's, or the locally connected one of
    ``local_recurrent``): the bottom-up pass, the head and hard negatives on it, then every
    layer's FF gradients over the iterations (``engine.ff_grads``), all inside ``scope()``."""
    def step(x: torch.Tensor, y: torch.Tensor, g: torch.Generator, idx: torch.Tensor | None = None) -> torch.Tensor:
        if cfg.jitter:
            x = jitter(x, cfg.jitter, generator=g)
        b = x.shape[0]
        opt.zero_grad(set_to_none=True)
        head_opt.zero_grad(set_to_none=True)
        with scope():
            bu = engine.bottom_up(x)   # t = 0, shared by positive and negative (label independent)
            # The "single forward pass" for hard negatives: softmax head on the bottom-up pass.
            logits = head(net.features(bu.init))
            head_loss = F.cross_entropy(logits.float(), y)
            if cfg.negatives == "hard":
                y_neg = hard_wrong_labels(logits.detach().softmax(1), y, generator=g)
            else:
                y_neg = uniform_wrong_labels(y, num_classes, generator=g)
            # Positive (true label on top) and negative (wrong label) runs as one batch of 2B.
            top = net.label_input(torch.cat([y, y_neg]), 2 * b, device)
            loss = engine.ff_grads(bu, x, top)   # every layer's FF gradients, summed over the iterations
        head_loss.backward()                     # the head's own graph: the features are detached
        opt.step()
        head_opt.step()
        return loss
    return step


# ----------------------------------------------------------------------------- settling record
@torch.no_grad()
def save_settling(run_dir: str | Path, net: RecurrentFFNet, x: torch.Tensor, y: torch.Tensor, *,
                  iterations: int, window: tuple[int, int], layers: Sequence[int] | None = None,
                  rt: Runtime | None = None, shared: bool = True) -> Path:
    """Write ``settling.safetensors`` into ``run_dir``: how goodness settles, for
    ``fflab.plot.plot_settling``.

    Entries: ``goodness`` (B, N, T+1, L) goodness of each hidden layer at each iteration with each
    label clamped at the top (t = 0: the bottom-up initialization); ``labels`` (B,) the true labels;
    ``threshold`` (L,); ``window`` (2,) the test window; ``eval_layers`` the layers the test sums.
    Metadata: goodness name and damping.
    """
    from safetensors.torch import save_file
    was_training = net.training
    net.train(False)
    g = label_goodness(net, x, iterations, rt=rt, shared=shared)
    net.train(was_training)
    layers = list(range(len(net.layers))) if layers is None else list(layers)
    tensors = {
        "goodness": g.cpu().contiguous(),
        "labels": y.long().cpu().contiguous(),
        "threshold": torch.tensor([layer.threshold for layer in net.layers]),
        "window": torch.tensor(list(window)),
        "eval_layers": torch.tensor(layers),
    }
    meta = {"goodness": net.layers[0].goodness_name, "damping": repr(net.damping)}
    path = Path(run_dir) / SETTLING_FILE
    runs.atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))
    return path
