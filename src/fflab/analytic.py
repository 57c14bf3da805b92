"""Analytic local gradients for dense FF stacks: the FF update without autograd (paper section 2).

For a dense layer ``z = x W^T + b``, ``h = relu(z)`` and goodness ``G = s * sum_j h_j^2 / n``
(s = +1 for ssq and mean_ssq, -1 for min_ssq; n = 1, or D for mean_ssq), the FF loss
``softplus(t - G)`` on positives and ``softplus(G - t)`` on negatives (means over each half of
the batch) has

    dL/dG = -sigmoid(t - G) / B   (positive case),   +sigmoid(G - t) / B   (negative case)
    dL/dz = dL/dG * s * 2 h / n   (h is 0 wherever z <= 0, so the ReLU gate comes for free)
    dL/dW = dz^T x,   dL/db = sum_batch dz

so one product per layer for the update, and nothing else: no graph, no saved tensors, no
input gradient. Block goodness gives every block its own dL/dG; peer normalization adds its
constant per-unit term on active positive units. ``tests/test_analytic.py`` checks all of this
against autograd.
"""
from __future__ import annotations

import torch

from .layers import FFDense, normalize
from .nets import FFNet

_SIGN = {"ssq": 1.0, "min_ssq": -1.0, "mean_ssq": 1.0}


def supports(net: FFNet) -> bool:
    """True when every layer is a dense FF layer with a goodness this module differentiates."""
    return all(type(layer) is FFDense and layer.goodness_name in _SIGN for layer in net.layers)


@torch.no_grad()
def ff_backward(net: FFNet, x_pn: torch.Tensor, num_pos: int, *, dtype: torch.dtype | None = None
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Forward ``x_pn`` = cat([x_pos, x_neg]) (2B, D_in) through ``net`` and set every layer's
    ``weight.grad`` / ``bias.grad`` to the gradient of its own FF loss (plus peer normalization).

    ``dtype=torch.bfloat16`` runs the products in bf16 (fp32 accumulation; grads stored in fp32).
    Returns (sum of the layers' losses (detached scalar), pre-normalization activities per layer).
    """
    b_pos = num_pos
    b_neg = x_pn.shape[0] - num_pos
    x = normalize(x_pn, net.eps)
    total = x_pn.new_zeros(())
    hs = []
    for layer in net.layers:
        w, bias = layer.weight, layer.bias
        xin = x.to(dtype) if dtype is not None else x
        wc = w.to(dtype) if dtype is not None else w
        z = torch.addmm(bias.to(xin.dtype), xin, wc.t())        # (2B, out)
        h = z.relu_()                                          # in place: z is not needed again
        hs.append(h)
        hf = h.float() if h.dtype in (torch.bfloat16, torch.float16) else h
        bs = layer.block_size or layer.num_units
        n = bs if layer.goodness_name == "mean_ssq" else 1
        s = _SIGN[layer.goodness_name]
        g = s * hf.view(hf.shape[0], -1, bs).square().sum(-1) / n    # (2B, blocks)
        t = layer.threshold
        blocks = g.shape[1]
        # mean over cases and blocks, as in FFLayer.local_loss -> ff_loss(...).mean()
        dg = torch.empty_like(g)
        dg[:b_pos] = -torch.sigmoid(t - g[:b_pos]) / (b_pos * blocks)
        dg[b_pos:] = torch.sigmoid(g[b_pos:] - t) / (b_neg * blocks)
        total += (torch.nn.functional.softplus(t - g[:b_pos]).mean()
                  + torch.nn.functional.softplus(g[b_pos:] - t).mean())
        dz = hf.view(hf.shape[0], -1, bs).mul(dg.unsqueeze(-1) * (2.0 * s / n)).view_as(hf)
        if layer.peer_norm > 0 and layer.training:
            layer.peer_mean.mul_(layer.peer_momentum).add_(hf[:b_pos].mean(0), alpha=1 - layer.peer_momentum)
            c = layer.peer_norm * (layer.peer_mean.mean() - layer.peer_mean)
            dz[:b_pos] -= (hf[:b_pos] > 0).float() * (c / b_pos)
            total -= (hf[:b_pos] * c).sum(-1).mean()
        dzc = dz.to(dtype) if dtype is not None else dz
        w.grad = torch.mm(dzc.t(), xin).to(w.dtype)              # (out, in): the only product of the update
        bias.grad = dz.sum(0).to(bias.dtype)
        x = normalize(h, net.eps)
    return total, hs
