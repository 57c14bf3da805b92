"""The analytic engines for dense FF stacks: the FF update without autograd (paper section 2).

For a dense layer ``z = x W^T + b``, ``h = relu(z)``, the layer's own loss (``FFLayer.local_loss``)
has ``dL/dz = FFLayer.local_grad(h)`` (the goodness terms vanish where h = 0, so the ReLU gate
comes for free), ``dL/dW = dz^T x`` and ``dL/db = sum_batch dz``: one product per layer for the
update, and nothing else (no graph, no saved tensors, no input gradient).

``ff_backward`` runs one batch of positive and negative inputs through the stack
(``engine=analytic``). ``LabelledInput`` (``engine=shared``) goes further for supervised FF,
whose neutral, positive and negative inputs share the image and differ only in the label
pixels: the first layer's image product is made once per step for all three. The tests check
both against autograd.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from ..layers import FFDense, normalize
from ..nets import FFNet
from .compiled import compile_static
from .products import linear
from .update import GradProduct


def supports(net: FFNet) -> bool:
    """True when every layer is a dense FF layer (the analytic engines' gradients are dense)."""
    return all(type(layer) is FFDense for layer in net.layers)


def cast_to(t: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """``t`` in the products' dtype (None: keep the parameters' own dtype, no copy)."""
    return t if dtype is None else t.to(dtype)


def _put_grad(param: torch.Tensor, grad: torch.Tensor, grads: list[torch.Tensor] | None) -> None:
    """``param.grad = grad`` (in the parameter's dtype), or, given a list, append ``grad`` as it is
    (``update.CompiledUpdate`` takes bf16 gradients and widens them in its own pass)."""
    if grads is None:
        param.grad = grad.to(param.dtype)
    else:
        grads.append(grad)


def _put_weight_grad(w: torch.Tensor, a: torch.Tensor, b: torch.Tensor, grads: list | None, defer: bool) -> None:
    """The weight gradient ``a.T @ b`` (dL/dz rows by input rows, (out, in)): made and put as
    ``_put_grad`` does, or, with ``defer``, appended to ``grads`` unmade as an
    ``update.GradProduct``, which ``update.ProductSGD`` makes straight into the momentum buffer."""
    if defer:
        grads.append(GradProduct(a, b))
    else:
        _put_grad(w, torch.mm(a.t(), b), grads)


def stack_backward(layers, x: torch.Tensor, num_pos: int, eps: float, dtype: torch.dtype | None,
                   total: torch.Tensor, hs: list[torch.Tensor], weights=None, grads=None,
                   defer: bool = False) -> torch.Tensor:
    """Forward normalized input x through ``layers`` setting each layer's grads; returns the loss sum.
    ``weights``: the layers' weights already cast to ``dtype`` (saves a cast per product).
    ``grads``: a list to append (weight, bias) gradients to instead of setting ``.grad``;
    ``defer``: the weight gradients go in it as ``GradProduct``s (``_put_weight_grad``)."""
    for i, layer in enumerate(layers):
        w, bias = layer.weight, layer.bias
        xin = cast_to(x, dtype)
        wc = weights[i] if weights is not None else cast_to(w, dtype)
        h = linear(xin, wc, bias.to(xin.dtype), relu=True)            # (2B, out)
        hs.append(h)
        dz, loss = layer.local_grad(h, num_pos)
        total = total + loss
        _put_weight_grad(w, cast_to(dz, dtype), xin, grads, defer)    # (out, in): the update's only product
        _put_grad(bias, dz.sum(0), grads)
        x = normalize(h, eps)
    return total


def stack_forward(layers, x: torch.Tensor, eps: float, dtype: torch.dtype | None,
                  weights=None, out_dtype: torch.dtype | None = None) -> list[torch.Tensor]:
    """Activities of ``layers`` (pre-normalization, each in ``out_dtype`` or the products'
    dtype) for normalized input x: the forward half of ``stack_backward``, nothing saved."""
    hs = []
    for i, layer in enumerate(layers):
        xin = cast_to(x, dtype)
        wc = weights[i] if weights is not None else cast_to(layer.weight, dtype)
        h = linear(xin, wc, layer.bias.to(xin.dtype), relu=True)
        h = h if out_dtype is None else h.to(out_dtype)
        hs.append(h)
        x = normalize(h, eps)
    return hs


@torch.no_grad()
def ff_backward(net: FFNet, x_pn: torch.Tensor, num_pos: int, *, dtype: torch.dtype | None = None
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Forward ``x_pn`` = cat([x_pos, x_neg]) (2B, D_in) through ``net`` and set every layer's
    ``weight.grad`` / ``bias.grad`` to the gradient of its own FF loss (plus peer normalization).

    ``dtype=torch.bfloat16`` runs the products in bf16 (fp32 accumulation; grads stored in fp32).
    Returns (sum of the layers' losses (detached scalar), pre-normalization activities per layer).
    """
    hs: list[torch.Tensor] = []
    total = stack_backward(net.layers, normalize(x_pn, net.eps), num_pos, net.eps, dtype,
                            x_pn.new_zeros(()), hs)
    return total, hs


# ----------------------------------------------------------------------------- shared label input
# Supervised FF feeds the same image three times per step (neutral, positive and negative label),
# and the images differ only in the first num_classes pixels. The first layer's product with the
# image part, P = img W^T, is therefore computed once; each labelled variant adds its label
# column(s) and rescales by its own input RMS (which depends on the label only through |label|^2).
# Likewise the first layer's weight gradient needs the image product once for positives and
# negatives together, because they share the image and (one-hot labels) the RMS.

class LabelledInput:
    """The image part of a batch, shared by its neutral, positive and negative variants."""

    @torch.no_grad()   # no autograd graph: these products feed the analytic update only
    def __init__(self, net: FFNet, x: torch.Tensor, num_classes: int, dtype: torch.dtype | None = None,
                 weights: list[torch.Tensor] | None = None):
        """``weights``: the layers' weights already in ``dtype`` (``update.CompiledUpdate.weights``)."""
        self.net, self.num_classes, self.dtype = net, num_classes, dtype
        self.img = x.clone()
        self.img[:, :num_classes] = 0
        self.sq = self.img.square().sum(1)                     # (B,) squared length of the image part
        # Cast once per step: the neutral and the positive/negative passes share these copies.
        self.weights = weights if weights is not None else [cast_to(layer.weight, dtype) for layer in net.layers]
        self.img_c = cast_to(self.img, dtype)
        self.P = linear(self.img_c, self.weights[0], None).to(x.dtype)   # (B, out0)
        # The label columns as rows (C, out0): gathering rows is contiguous, columns of W are strided.
        self.label_rows = net.layers[0].weight[:, :num_classes].t().contiguous()

    def _rms(self, label_sq: float) -> torch.Tensor:
        return self.net.eps + ((self.sq + label_sq) / self.img.shape[1]).sqrt()  # (B,)

    def first_z(self, labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """First-layer pre-activation for one-hot ``labels`` (B,), or the neutral label if None."""
        b0 = self.net.layers[0].bias
        C = self.num_classes
        if labels is None:
            r = self._rms(C * 0.1 ** 2)
            z = (self.P + 0.1 * self.label_rows.sum(0)) / r[:, None] + b0
        else:
            r = self._rms(1.0)
            z = (self.P + self.label_rows[labels]) / r[:, None] + b0
        return z, r

    @torch.no_grad()
    def forward(self, labels: torch.Tensor | None) -> list[torch.Tensor]:
        """Activities of every layer, equal to ``net(overlay_label(x, labels))``."""
        return self._upper(self.first_z(labels)[0].relu_())

    @torch.no_grad()
    def forward_each_label(self) -> list[torch.Tensor]:
        """Activities of every layer for every one-hot label, rows label-major (C*B, D): equal to
        ``net(overlay_label(x.repeat(C, 1), arange(C).repeat_interleave(B)))``, the per-label
        evaluation of section 3.3, with one first-layer image product instead of C."""
        C, B = self.num_classes, self.img.shape[0]
        b0 = self.net.layers[0].bias
        r = self._rms(1.0)
        z = (self.P.unsqueeze(0) + self.label_rows.unsqueeze(1)) / r[None, :, None] + b0   # (C, B, out0)
        return self._upper(z.reshape(C * B, -1).relu_())

    def _upper(self, h: torch.Tensor) -> list[torch.Tensor]:
        """Given the first layer's activities, those of every layer (the layers above share no work)."""
        return [h, *stack_forward(self.net.layers[1:], normalize(h, self.net.eps), self.net.eps, self.dtype,
                                  weights=self.weights[1:], out_dtype=self.img.dtype)]

    @torch.no_grad()
    def ff_backward(self, y_pos: torch.Tensor, y_neg: torch.Tensor,
                    grads: list[torch.Tensor] | None = None, defer: bool = False,
                    hs_out: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Same gradients as ``ff_backward(net, cat([overlay(x, y_pos), overlay(x, y_neg)]), B)``,
        set as ``.grad`` or, given ``grads``, appended to it in parameter order (the upper layers'
        weight gradients in the products' dtype; with ``defer``, every weight gradient as an
        ``update.GradProduct``, for ``update.ProductSGD``). Returns the sum of the layers' losses;
        ``hs_out``, given, receives every layer's activities (2B, D) (a pipeline stage sends the
        last one up)."""
        total, dz_r = self.ff_backward_image(y_pos, y_neg, grads, defer, hs_out)
        self.add_label_grad(dz_r, y_pos, y_neg, grads)
        return total

    @torch.no_grad()
    def ff_backward_image(self, y_pos: torch.Tensor, y_neg: torch.Tensor,
                          grads: list[torch.Tensor] | None = None, defer: bool = False,
                          hs_out: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``ff_backward`` but for the first layer's label columns: returns the loss and the
        first layer's dL/dz per input row (2B, out0), from which ``add_label_grad`` adds them.
        Split so that ``compiled_ff_backward`` can leave that small update out of the compiled
        graph: compiled, the scatter-add becomes atomic adds and the C-column update a rewrite
        of all of W0's gradient, both slower than the eager update."""
        net, b = self.net, self.img.shape[0]
        layer0 = net.layers[0]
        z_pos, r = self.first_z(y_pos)
        z_neg, _ = self.first_z(y_neg)
        h = torch.cat([z_pos, z_neg]).relu_()                 # (2B, out0)
        dz, total = layer0.local_grad(h, b)
        dz_r = dz / torch.cat([r, r])[:, None]                # the input rows were divided by r
        w0 = layer0.weight
        dz_img = cast_to(dz_r[:b] + dz_r[b:], self.dtype)    # positives and negatives share the image
        if defer:
            grads.append(GradProduct(dz_img, self.img_c))
        else:
            # In the parameter's dtype even for a list: add_label_grad then adds the label columns'
            # sums (the image part of those columns is 0) without rounding them to bf16.
            _put_grad(w0, torch.mm(dz_img.t(), self.img_c).to(w0.dtype), grads)
        _put_grad(layer0.bias, dz.sum(0), grads)
        hs = [h]
        total = stack_backward(net.layers[1:], normalize(h, net.eps), b, net.eps, self.dtype, total, hs,
                               weights=self.weights[1:], grads=grads, defer=defer)
        if hs_out is not None:
            hs_out.extend(hs)
        return total, dz_r

    @torch.no_grad()
    def add_label_grad(self, dz_r: torch.Tensor, y_pos: torch.Tensor, y_neg: torch.Tensor,
                       grads: list[torch.Tensor] | None = None) -> None:
        """Add the label columns' part to the first layer's weight gradient (``.grad``, or
        ``grads[0]``, or, a deferred ``GradProduct``, as its ``cols``): each case adds its dz row
        to the column of its label. Rows of a (C, out0) sum are contiguous, and two one-hot
        products cost more for the same numbers; the in-place add touches C columns and nothing
        else."""
        label_grad = dz_r.new_zeros(self.num_classes, dz_r.shape[1]).index_add_(0, torch.cat([y_pos, y_neg]), dz_r)
        if grads is not None and isinstance(grads[0], GradProduct):   # deferred: the update adds them
            grads[0] = grads[0]._replace(cols=label_grad.t())
            return
        grad = self.net.layers[0].weight.grad if grads is None else grads[0]
        grad[:, :self.num_classes] += label_grad.t()


def compiled_ff_backward(device: torch.device) -> Callable[..., torch.Tensor]:
    """``LabelledInput.ff_backward`` through ``torch.compile`` (inductor, static shapes).

    The products stay library calls; what compiling buys is the elementwise work between them
    (goodness, sigmoid, dL/dz, peer normalization, length normalization, dtype casts) merged into a
    few loops instead of ~15 passes over each (2B, D) activity tensor. The first call compiles
    (seconds); a new batch size (e.g. a short last batch) compiles once more, and so does each new
    net in the same process (torch falls back to eager, with a warning, after its recompile limit).
    Same gradients as the eager function up to float rounding (tests/test_analytic.py).
    """
    image_part = compile_static(LabelledInput.ff_backward_image, device)

    def ff_backward(li: LabelledInput, y_pos: torch.Tensor, y_neg: torch.Tensor,
                    grads: list[torch.Tensor] | None = None, defer: bool = False) -> torch.Tensor:
        total, dz_r = image_part(li, y_pos, y_neg, grads, defer)
        li.add_label_grad(dz_r, y_pos, y_neg, grads)   # eager on purpose (ff_backward_image)
        return total

    return ff_backward
