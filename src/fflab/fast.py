"""Learning fast: one online step that gives every layer an exact goodness (paper section 8).

For a stack of fully connected ReLU layers (``weight`` (out, in), optional ``bias`` (out,), as in
``FFDense`` or ``nn.Linear``) with length normalization between layers, the paper observes that the
FF update of a layer for one input x only rescales that layer's activity vector for x, so:

* the layer's *normalized* output for x does not change, hence the next layer's input does not
  change, hence all layers can be updated at once from one forward pass;
* with x and every normalized hidden vector of length 1 and ``S_L`` the current goodness (sum of
  squares of the ReLU output y_L) of layer L, the learning rate ``eps_L = sqrt(S*/S_L) - 1``
  makes every layer's goodness for x exactly ``S*`` after one step.

Derivation. Layer L gets x_L (its normalized input) and computes z = W x_L + b, y_L = relu(z).
The FF update is ``dW = eta * y_L x_L^T`` and ``db = eta * y_L`` (the bias is the weight of an
extra input fixed at 1). The new pre-activation for x_L is

    z' = z + eta * y_L (|x_L|^2 + 1)        (the "+ 1" only if the layer has a bias).

Inactive units (z <= 0) have y = 0, get no update and stay inactive; active units have y = z, so
z' = (1 + eps) y with ``eps = eta (|x_L|^2 + 1)``, still positive because 1 + eps > 0. Hence
``y_L' = (1 + eps) y_L``: the orientation is unchanged and the goodness becomes
``(1 + eps)^2 S_L``, which equals S* for ``eps = sqrt(S*/S_L) - 1``.

This module takes ``eta = eps / (|x_L|^2 + 1)`` (no "+ 1" without a bias), which makes the step
exact for any input length and with biases. With the paper's assumptions (|x_L| = 1, no bias)
``eta = eps``: the paper's learning rate.

Normalization: the paper states the result for vectors of length 1, so the default here is L2
normalization (``h / |h|``), for the input x too. The networks' RMS normalization
(``fflab.layers.normalize``) differs only by the constant factor sqrt(D), which the ``eta`` above
absorbs, so ``norm="rms"`` is just as exact for the layers of an fflab network; any other function
can be passed as ``norm`` (the step is exact if it is scale invariant).

DEVIATION: none from the paper's math; the paper does not say how biases are treated, and this
module treats a bias as a weight on a constant input of 1.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

Norm = Callable[[torch.Tensor], torch.Tensor]


def l2_normalize(h: torch.Tensor) -> torch.Tensor:
    """``h / |h|`` along the last dim: (B, D) -> (B, D); rows of zeros stay zero.

    The clamp (instead of adding a small constant) keeps ``normalize(c h) == normalize(h)``
    exact for every c > 0, which is what section 8 relies on.
    """
    return h / h.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(h.dtype).tiny)


def rms_normalize(h: torch.Tensor) -> torch.Tensor:
    """``h / rms(h)`` = ``sqrt(D) * l2_normalize(h)``: the networks' normalization
    (``fflab.layers.normalize``) without its guard term and dtype cast, so the step stays exact."""
    return h / h.square().mean(-1, keepdim=True).sqrt().clamp_min(torch.finfo(h.dtype).tiny)


_NORMS: dict[str, Norm] = {"l2": l2_normalize, "rms": rms_normalize}


def _get_norm(norm: str | Norm) -> Norm:
    if callable(norm):
        return norm
    try:
        return _NORMS[norm]
    except KeyError:
        raise ValueError(f"unknown norm {norm!r}; choose one of {sorted(_NORMS)} or pass a function") from None


def _bias(layer: nn.Module) -> torch.Tensor | None:
    return getattr(layer, "bias", None)


def forward(layers: Sequence[nn.Module], x: torch.Tensor, *,
            norm: str | Norm = "l2") -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """One pass through the stack. x: (B, D_in) or (D_in,).

    Returns ``(inputs, ys)``: ``inputs[L]`` (B, in_L) is layer L's normalized input (``inputs[0]``
    is the normalized x) and ``ys[L]`` (B, out_L) its ReLU output before normalization.
    """
    normalize = _get_norm(norm)
    h = x.unsqueeze(0) if x.dim() == 1 else x
    inputs, ys = [], []
    for layer in layers:
        h = normalize(h)
        inputs.append(h)
        h = torch.relu(nn.functional.linear(h, layer.weight, _bias(layer)))
        ys.append(h)
    return inputs, ys


@torch.no_grad()
def layer_goodness(layers: Sequence[nn.Module], x: torch.Tensor, *,
                   norm: str | Norm = "l2") -> torch.Tensor:
    """Goodness (sum of squares of y_L) of every layer: (B, D_in) -> (B, num_layers)."""
    _, ys = forward(layers, x, norm=norm)
    return torch.stack([y.square().sum(-1) for y in ys], dim=-1)


@torch.no_grad()
def fast_deltas(layers: Sequence[nn.Module], x: torch.Tensor,
                target_goodness: float | Sequence[float], *, norm: str | Norm = "l2",
                ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor | None]]]:
    """The one-step update for one case x, without applying it (pure).

    x: (D_in,) or (1, D_in). ``target_goodness``: S*, one number or one per layer.
    Returns ``(eps, deltas)``: eps (num_layers,) with ``eps_L = sqrt(S*_L / S_L) - 1``, and for
    each layer ``(dW (out, in), db (out,) or None)``, all computed from one forward pass.
    Raises ValueError if a layer has no active unit for x (S_L = 0: no step of this form can
    change its goodness).
    """
    if x.dim() == 2 and x.shape[0] != 1:
        raise ValueError(f"fast learning takes one case at a time; got a batch of {x.shape[0]}")
    inputs, ys = forward(layers, x, norm=norm)
    try:
        targets = [float(t) for t in target_goodness]  # one per layer
    except TypeError:
        targets = [float(target_goodness)] * len(ys)
    if len(targets) != len(ys):
        raise ValueError(f"{len(targets)} target goodnesses for {len(ys)} layers")
    eps, deltas = [], []
    for index, (layer, x_l, y, s_star) in enumerate(zip(layers, inputs, ys, targets)):
        x_l, y = x_l[0], y[0]  # (in,), (out,)
        s_l = y.square().sum()
        if s_l <= 0:
            raise ValueError(f"layer {index} has no active unit for this input (S_L = 0)")
        if s_star <= 0:
            raise ValueError(f"target goodness must be positive, got {s_star}")
        eps_l = torch.sqrt(s_star / s_l) - 1
        bias = _bias(layer)
        # The squared length of the input the weights see; the bias sees a constant 1.
        input_sq = x_l.square().sum() + (1.0 if bias is not None else 0.0)
        eta = eps_l / input_sq
        d_w = eta * torch.outer(y, x_l)
        d_b = eta * y if bias is not None else None
        eps.append(eps_l)
        deltas.append((d_w, d_b))
    return torch.stack(eps), deltas


@torch.no_grad()
def fast_update(layers: Sequence[nn.Module], x: torch.Tensor,
                target_goodness: float | Sequence[float], *, norm: str | Norm = "l2") -> torch.Tensor:
    """Change every layer's weights in one step so each layer's goodness for x becomes S*.

    All steps come from one forward pass before any weight changes (``fast_deltas``) and are
    then applied at once, in place. x: (D_in,) or (1, D_in). Returns eps (num_layers,).
    """
    eps, deltas = fast_deltas(layers, x, target_goodness, norm=norm)
    for layer, (d_w, d_b) in zip(layers, deltas):
        layer.weight.add_(d_w.to(layer.weight.dtype))
        if d_b is not None:
            layer.bias.add_(d_b.to(layer.bias.dtype))
    return eps


@torch.no_grad()
def online_fast_learning_demo(layers: Sequence[nn.Module], x_seen: torch.Tensor,
                              x_unseen: torch.Tensor, target_goodness: float, *,
                              norm: str | Norm = "l2") -> dict[str, torch.Tensor]:
    """Learn the cases of ``x_seen`` (N, D_in) one at a time, one ``fast_update`` each, in order.

    Modifies ``layers`` in place (pass a copy to keep the originals). Returns goodness tables,
    each (cases, num_layers):

    - ``g_seen_before``, ``g_unseen_before``: before any step;
    - ``g_seen_own_step``: case i right after its own step (S* up to rounding, by construction);
    - ``g_seen``, ``g_unseen``: after all steps;
    - ``eps``: (N, num_layers), the step of each case.

    What it shows: one step absorbs a case exactly. Later steps for other cases move the earlier
    cases' goodness away from S* (their weight changes overlap), and unseen cases move too, by
    how much their normalized inputs overlap with the seen ones (for non-negative inputs such as
    images, a lot): one-shot learning of this kind is not selective on its own.
    """
    g_seen_before = layer_goodness(layers, x_seen, norm=norm)
    g_unseen_before = layer_goodness(layers, x_unseen, norm=norm)
    eps, own = [], []
    for x in x_seen:
        eps.append(fast_update(layers, x, target_goodness, norm=norm))
        own.append(layer_goodness(layers, x, norm=norm)[0])
    return {
        "g_seen_before": g_seen_before,
        "g_seen_own_step": torch.stack(own),
        "g_seen": layer_goodness(layers, x_seen, norm=norm),
        "g_unseen_before": g_unseen_before,
        "g_unseen": layer_goodness(layers, x_unseen, norm=norm),
        "eps": torch.stack(eps),
    }
