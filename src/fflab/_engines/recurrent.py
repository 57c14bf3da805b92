"""The recurrent net's training step without autograd (paper section 4), ``engine=shared``.

``recurrent.RecurrentFFNet.step`` under autograd gives the same update, but it pays for work the
recurrent net does not need. With ``c_l(t) = relu(a_l(t))``,
``a_l(t) = W_l n_{l-1}(t-1) + V_l n_{l+1}(t-1) + b_l`` and ``h_l(t) = d h_l(t-1) + (1-d) c_l(t)``
(every input detached, so the loss on h_l(t) reaches only layer l's weights through this step):

    dL/da_l(t) = (1-d) * dL/dh_l(t) * [a_l(t) > 0]
    dL/dW_l = sum_t dL/da_l(t)^T n_{l-1}(t-1),   dL/dV_l = sum_t dL/da_l(t)^T n_{l+1}(t-1)

where dL/dh_l(t) is the plain FF gradient of the layer's own loss (``FFLayer.local_grad``). So:

- the image is clamped, and the positive and negative runs share it: the first layer's image
  product ``W_0 n_0`` is computed once per step for B rows (it also is the bottom-up
  initialization's first product), not 2B rows x T iterations; its weight gradient is one
  (D_0 x B) @ (B x 784) product of the gradients summed over iterations and over the two halves;
- the label layer is clamped too: the top layer's top-down gradient is one product of the
  iteration-summed gradients with the (normalized) label;
- each hidden-to-hidden weight gradient is ONE product over all T iterations stacked along the
  batch axis (K = 2B*T rows), instead of T products of K = 2B: the large products a CPU or GPU
  runs fastest;
- products can run in bf16 (fp32 accumulation, states and gradients kept in fp32), with each
  weight cast to bf16 once per step rather than once per iteration.

``tests/test_recurrent.py`` checks the gradients and the loss against the autograd step.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..layers import fp32_accum, normalize
from .dense import cast_to
from .products import linear

__all__ = ["BottomUp", "bottom_up", "trajectory", "recurrent_backward"]


@dataclass
class BottomUp:
    """One step's bottom-up pass: what the positive run, the negative run and the update share."""
    img: torch.Tensor            # (B, in) the normalized image, in the product dtype
    a0: torch.Tensor             # (B, D_0) the first layer's image input W_0 n_0 + b_0 (fp32)
    init: list[torch.Tensor]     # the states at t = 0, (B, D_l) each (fp32)
    weights: list[torch.Tensor]  # the bottom-up weights W_l in the product dtype


@torch.no_grad()
def bottom_up(net, x: torch.Tensor, dtype: torch.dtype | None = None) -> BottomUp:
    """The bottom-up initialization (t = 0) of ``net.init_states``, keeping the image product."""
    layers, eps = net.layers, net.eps
    img = cast_to(normalize(x, eps), dtype)
    W = [cast_to(layer.weight, dtype) for layer in layers]
    a0 = fp32_accum(linear(img, W[0], cast_to(layers[0].bias, img.dtype)))
    init = [a0.relu()]
    for layer, w in zip(layers[1:], W[1:]):
        below = cast_to(normalize(init[-1], eps), dtype)
        init.append(fp32_accum(linear(below, w, cast_to(layer.bias, below.dtype), relu=True)))
    return BottomUp(img, a0, init, W)


def trajectory(net, bu: BottomUp, top: torch.Tensor, iterations: int, dtype: torch.dtype | None = None):
    """The damped synchronous iterations t = 1..T from ``bu``'s states, for ``top.shape[0] = R*B``
    rows (R label layers per image, rows label-major: the image block repeated R times).

    Yields per iteration ``(n, c, h)``: the normalized hidden states at t-1 in the product dtype
    (the inputs), the computed activities c_l(t) = relu(a_l(t)) and the new states h_l(t) (fp32).
    """
    layers, d, eps = net.layers, net.damping, net.eps
    reps = top.shape[0] // bu.img.shape[0]
    W, V = bu.weights, [cast_to(layer.weight_down, dtype) for layer in layers]
    # Clamped inputs, computed once: the image term (B rows, shared by all R runs of an image)
    # and the label term of the top layer.
    a_img = bu.a0.repeat(reps, 1)
    a_top = fp32_accum(linear(top.to(V[-1].dtype), V[-1], None))
    states = [h.repeat(reps, 1) for h in bu.init]
    for _ in range(iterations):
        n = [cast_to(normalize(h, eps), dtype) for h in states]
        c, new = [], []
        for l, layer in enumerate(layers):
            if l == 0:
                a = a_img.clone()
            else:
                a = fp32_accum(linear(n[l - 1], W[l], cast_to(layer.bias, n[l - 1].dtype)))
            a += fp32_accum(linear(n[l + 1], V[l], None)) if l + 1 < len(layers) else a_top
            c.append(a.relu_())
            new.append(states[l].mul(d).add_(c[-1], alpha=1 - d))
        yield n, c, new
        states = new


@torch.no_grad()
def recurrent_backward(net, bu: BottomUp, top: torch.Tensor, iterations: int, *,
                       dtype: torch.dtype | None = None) -> torch.Tensor:
    """Set every layer's ``weight``/``weight_down``/``bias`` ``.grad`` to the gradient of the sum over
    iterations 1..T of its FF loss, positives (label ``top[:B]``) against negatives (``top[B:]``).

    bu: the step's bottom-up pass (``bottom_up(net, x, dtype)``), B images; top: (2B, N) the
    normalized label layer, positives first. ``dtype=torch.bfloat16`` runs the products in bf16
    (the same dtype as ``bu``). Returns the summed loss (detached scalar), equal to the autograd step's.
    """
    layers, d = net.layers, net.damping
    L, b = len(layers), bu.img.shape[0]
    normed_in: list[list[torch.Tensor]] = []   # per iteration: the inputs n(t-1)
    da: list[list[torch.Tensor]] = [[] for _ in range(L)]
    total = bu.a0.new_zeros(())
    for n, c, h in trajectory(net, bu, top, iterations, dtype):
        normed_in.append(n)
        for l, layer in enumerate(layers):
            dh, loss = layer.local_grad(h[l], b)
            total += loss
            da[l].append(dh.mul_(c[l] > 0).mul_(1 - d))                      # dL/da_l(t), (2B, D_l)
    # Each hidden layer's states at t-1 over all iterations, stacked along the batch axis: the
    # "below" input of the layer above it and the "above" input of the layer under it.
    inputs = [torch.cat([n[j] for n in normed_in]) for j in range(L)]
    for l, layer in enumerate(layers):
        summed = torch.stack(da[l]).sum(0)                                   # over iterations, (2B, D_l)
        g_all = cast_to(torch.cat(da[l]), dtype)                                # (T*2B, D_l)
        if l == 0:   # image input: sum over iterations and over the positive/negative halves first
            layer.weight.grad = fp32_accum(torch.mm(cast_to(summed[:b] + summed[b:], dtype).t(), bu.img))
        else:
            layer.weight.grad = fp32_accum(torch.mm(g_all.t(), inputs[l - 1]))
        if l + 1 < L:
            layer.weight_down.grad = fp32_accum(torch.mm(g_all.t(), inputs[l + 1]))
        else:        # label input: clamped, so one product of the iteration-summed gradients
            layer.weight_down.grad = fp32_accum(torch.mm(cast_to(summed, dtype).t(), cast_to(top, dtype)))
        layer.bias.grad = summed.sum(0)
    return total
