"""Locally connected FF layers: local receptive fields without weight sharing (paper sections 3.2
and 4, CIFAR-10).

The paper's best unsupervised MNIST model (1.16%) and all its CIFAR-10 models use hidden layers
whose units are laid out on a map of locations; each unit sees only a ``patch x patch`` patch of
the layer below (all its channels) and, unlike a convolution, every location has its own weights.

``FFLocal`` is one such layer: an FF layer exactly like ``FFDense`` (same goodness, threshold,
local loss and peer normalization, via ``FFLayer``) whose weight matrix is block-sparse. The
forward pass is one patch gather (a strided view and one copy) and one batched matmul over
locations, no Python loop:

    x (B, C_in, H, W) -> patches (L, B, K) @ weight (L, K, U) -> (L, B, U) -> (B, U*L)

with K = C_in * patch * patch, L = H_out * W_out locations and U units per location.

That is ``impl="bmm"``. The default, ``impl="dense"``, computes the same function as one ordinary
GEMM: the local weights are scattered into a zero (out_features, in_features) matrix (a fixed
index, built once) and ``F.linear`` does the rest; autograd gathers the weight gradient back
from the dense product. It does ~1/density more multiply-adds (about 8x for the MNIST geometry
below) but each bmm of the per-location path has only U = 10 columns, far from the matmul peak,
and on a CPU the dense GEMM is the faster of the two for this geometry
(``benchmarks/local_layer.py`` times both). The two give the same outputs and gradients (tests).

Output order is channel-major: unit u at location (i, j) is output column
``u * H_out * W_out + i * W_out + j``, i.e. the flat output reshapes to an image (U, H_out, W_out)
with U channels, so a second ``FFLocal`` with ``in_shape=first.out_shape`` reads it directly
(and length normalization, which acts on the flat vector, is unaffected by the order).

Geometry (not stated in the paper for MNIST; our choice, see ``MNIST_LOCAL_LAYERS``):
CIFAR-10 (the paper's CIFAR-10 section) uses 32x32 maps with 3 units per location (3072
units) and 11x11 fields, i.e. stride 1 and padding 5. For MNIST we keep the 11x11 bottom-up
field in the first layer but use stride 2 and padding 5: a 14x14 map with 10 units per location
is 1960 units, as many as the 2000-unit dense layers the paper compares against. Layers 2-4 read
the (10, 14, 14) map below through 5x5 fields, stride 1, padding 2, so every layer keeps 1960
units. The part of the image a unit can see grows 11, 19, 27, 35 pixels per side over the 4
layers, so the last two layers (two of the three the linear readout uses) see the whole digit.
Cost per case: 0.24M multiply-adds in layer 1 and 0.49M in each later layer, against 1.6M and 4M
for the dense 784-2000-2000-2000-2000 net (1.7M parameters in all against 13.6M). The CIFAR-like
alternative (28x28 maps, 3 units per location = 2352 units, 11x11 fields, stride 1, padding 5)
costs about 1.7x more (0.28M in layer 1, 0.85M in each later layer) and its GEMMs have only
U = 3 columns, which run further from the matmul peak.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .layers import FFLayer

__all__ = ["FFLocal", "MNIST_LOCAL_LAYERS", "local_stack", "LocalLinear", "materialized", "LOCAL_IMPLS"]

# How ``LocalLinear`` multiplies: ``tiled`` gathers each 8x8 tile's input window once and makes
# one block-sparse product per tile; ``dense`` is the masked dense GEMM; ``bmm`` one product per
# location (``benchmarks/cifar_local.py`` times them).
LOCAL_IMPLS = ("tiled", "dense", "bmm")

# Our MNIST geometry (see the module docstring): per hidden layer, the local-field parameters.
MNIST_LOCAL_LAYERS: tuple[dict[str, int], ...] = (
    dict(units_per_location=10, patch=11, stride=2, padding=5),   # (1, 28, 28) -> (10, 14, 14)
    dict(units_per_location=10, patch=5, stride=1, padding=2),    # (10, 14, 14) -> (10, 14, 14)
    dict(units_per_location=10, patch=5, stride=1, padding=2),
    dict(units_per_location=10, patch=5, stride=1, padding=2),
)


class FFLocal(FFLayer):
    """Locally connected FF layer (no weight sharing): (B, C*H*W) -> (B, U*H_out*W_out).

    Args:
        in_shape: (C, H, W) of the input image or map.
        units_per_location: U, the number of units at each location of the output map.
        patch: side of the square patch each unit sees (all C input channels).
        stride, padding: as in a convolution; padding is with zeros.
        goodness, threshold, peer_norm, peer_momentum: the layer's objective, as in ``FFDense``
            (the default threshold is set from ``num_units = U * H_out * W_out``).
        generator: optional source of the initial weights.

    Parameters: ``weight`` (L, K, U) ~ N(0, 1/K) (the fan-in of each unit, as in the official
    code), ``bias`` (L, U) = 0, where L = H_out * W_out and K = C * patch * patch; K is ordered
    (channel, patch row, patch column) like ``torch.nn.functional.unfold``
    (and like a conv weight (U, C, patch, patch) flattened).
    The input may also be given as (B, C, H, W). ``forward`` returns ReLU activities before
    normalization, channel-major (see the module docstring); ``out_shape`` = (U, H_out, W_out).
    """

    def __init__(self, in_shape: tuple[int, int, int], units_per_location: int, patch: int, *,
                 stride: int = 1, padding: int = 0, goodness: str = "ssq",
                 threshold: float | None = None, peer_norm: float = 0.0,
                 peer_momentum: float = 0.9, generator: torch.Generator | None = None,
                 impl: str = "dense") -> None:
        super().__init__()
        if impl not in ("dense", "bmm"):
            raise ValueError(f"impl={impl!r}: choose dense or bmm")
        self.impl = impl
        c, h, w = (int(s) for s in in_shape)
        h_out, w_out = self.geometry((c, h, w), patch, stride=stride, padding=padding)
        self.in_shape = (c, h, w)
        self.out_shape = (units_per_location, h_out, w_out)
        self.units_per_location, self.patch = units_per_location, patch
        self.stride, self.padding = stride, padding
        self.num_locations = h_out * w_out
        self.fan_in = c * patch * patch
        self.in_features = c * h * w
        self.out_features = units_per_location * self.num_locations
        shape = (self.num_locations, self.fan_in, units_per_location)
        self.weight = nn.Parameter(torch.randn(shape, generator=generator) / math.sqrt(self.fan_in))
        self.bias = nn.Parameter(torch.zeros(self.num_locations, units_per_location))
        self._init_objective(self.out_features, goodness, threshold, peer_norm, peer_momentum)
        if impl == "dense":
            self._build_dense_index()

    def _build_dense_index(self) -> None:
        """Where each local weight sits in the equivalent dense (out_features, in_features) matrix.

        Weights that only ever see zero padding have no place (their gradient is 0 in both paths).
        """
        c, h, w = self.in_shape
        p, s, pad = self.patch, self.stride, self.padding
        # Input index + 1 of every (location, patch element); 0 marks padding. float64 is exact here.
        ids = (torch.arange(c * h * w, dtype=torch.float64) + 1).reshape(1, c, h, w)
        ids = F.pad(ids, (pad,) * 4)
        cols = ids.unfold(2, p, s).unfold(3, p, s).permute(2, 3, 0, 1, 4, 5)
        cols = cols.reshape(self.num_locations, self.fan_in).long() - 1                  # (L, K)
        L, K, U = self.num_locations, self.fan_in, self.units_per_location
        rows = torch.arange(U)[None, None, :] * L + torch.arange(L)[:, None, None]        # (L, 1, U): u*L + l
        cols = cols[:, :, None].expand(L, K, U)
        valid = cols >= 0
        self.register_buffer("_dense_index", (rows.expand(L, K, U) * self.in_features + cols)[valid],
                             persistent=False)
        self.register_buffer("_weight_index", valid.reshape(-1).nonzero().squeeze(1), persistent=False)

    def dense_weight(self) -> torch.Tensor:
        """The equivalent dense weight (out_features, in_features), differentiable in ``weight``."""
        flat = self.weight.new_zeros(self.out_features * self.in_features)
        flat = flat.index_put((self._dense_index,), self.weight.reshape(-1)[self._weight_index])
        return flat.view(self.out_features, self.in_features)

    @staticmethod
    def geometry(in_shape: tuple[int, int, int], patch: int, *, stride: int = 1,
                 padding: int = 0) -> tuple[int, int]:
        """(H_out, W_out) of the map of locations, as for a convolution."""
        _, h, w = in_shape
        if patch < 1 or stride < 1 or padding < 0:
            raise ValueError(f"need patch >= 1, stride >= 1, padding >= 0; got {patch}, {stride}, {padding}")
        h_out = (h + 2 * padding - patch) // stride + 1
        w_out = (w + 2 * padding - patch) // stride + 1
        if h_out < 1 or w_out < 1:
            raise ValueError(f"patch {patch} does not fit in a {h}x{w} input with padding {padding}")
        return h_out, w_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        if x.shape[1:] != self.in_shape:
            if x.dim() != 2 or x.shape[1] != self.in_features:
                raise ValueError(f"expected (B, {self.in_features}) or (B, *{self.in_shape}), "
                                 f"got {tuple(x.shape)}")
            x = x.reshape(b, *self.in_shape)
        if self.impl == "dense":
            bias = self.bias.t().reshape(-1)          # (U, L) flattened: channel-major like the rows
            return F.relu(F.linear(x.reshape(b, -1), self.dense_weight(), bias))
        # Patches as a strided view (B, C, H_out, W_out, patch, patch), then ONE copy into the
        # GEMM layout (L, B, K); K is ordered (channel, row, column) like F.unfold. One copy
        # instead of F.unfold's and then the permute's (benchmarks/local_layer.py times both).
        p, s = self.patch, self.stride
        if self.padding:
            x = F.pad(x, (self.padding,) * 4)
        cols = x.unfold(2, p, s).unfold(3, p, s).permute(2, 3, 0, 1, 4, 5)
        cols = cols.reshape(self.num_locations, b, self.fan_in)                     # (L, B, K)
        # One GEMM per location, batched: (L, B, K) @ (L, K, U) + (L, 1, U) -> (L, B, U).
        h = torch.baddbmm(self.bias.unsqueeze(1), cols, self.weight)
        # Channel-major (B, U, L) -> (B, U*H_out*W_out), so the output is an image with U channels.
        return F.relu(h.permute(1, 2, 0).reshape(b, self.out_features))

    def extra_repr(self) -> str:
        return (f"in_shape={self.in_shape}, out_shape={self.out_shape}, patch={self.patch}, "
                f"stride={self.stride}, padding={self.padding}, impl={self.impl}, goodness={self.goodness_name}, "
                f"threshold={self.threshold:g}, peer_norm={self.peer_norm:g}")


def local_stack(in_shape: tuple[int, int, int], layers: tuple[dict[str, int], ...] = MNIST_LOCAL_LAYERS,
                **objective) -> nn.ModuleList:
    """A stack of ``FFLocal`` layers, each reading the map of the one below.

    ``layers`` gives ``units_per_location``, ``patch``, ``stride`` and ``padding`` per layer;
    ``objective`` (goodness, threshold, peer_norm, peer_momentum, generator, impl) goes to every
    layer. A geometry that does not fit is a ValueError naming the layer.
    """
    out = nn.ModuleList()
    shape = tuple(in_shape)
    for i, geometry in enumerate(layers):
        try:
            layer = FFLocal(shape, **geometry, **objective)
        except ValueError as e:
            raise ValueError(f"local layer {i}: {e}") from None
        out.append(layer)
        shape = layer.out_shape
    return out


class LocalLinear(nn.Module):
    """Locally connected linear map, no weight sharing: (B, C*H*W) -> (B, U*H_out*W_out).

    ``weight`` (L, K, U) as in ``FFLocal`` (L = H_out*W_out locations, K = C*patch*patch ordered
    (channel, row, column), U units per location), optional ``bias`` (U*L,) channel-major; the
    output is channel-major, so it reads as a (U, H_out, W_out) map. ``operator()`` turns the
    weights into the layout ``impl`` multiplies with (differentiable); ``forward`` uses the one
    cached by ``materialized`` if any, so a step that applies the map many times scatters once.
    """

    def __init__(self, in_shape: tuple[int, int, int], units_per_location: int, patch: int, *,
                 stride: int = 1, padding: int = 0, bias: bool = True, std: float | None = None,
                 impl: str = "tiled", tile: int = 8) -> None:
        super().__init__()
        if impl not in LOCAL_IMPLS:
            raise ValueError(f"impl={impl!r}: choose {', '.join(LOCAL_IMPLS)}")
        c, h, w = (int(s) for s in in_shape)
        self.h_out, self.w_out = FFLocal.geometry((c, h, w), patch, stride=stride, padding=padding)
        self.in_shape, self.out_shape = (c, h, w), (units_per_location, self.h_out, self.w_out)
        self.patch, self.stride, self.padding, self.impl = patch, stride, padding, impl
        self.units_per_location = U = units_per_location
        self.num_locations = L = self.h_out * self.w_out
        self.fan_in = K = c * patch * patch
        self.in_features, self.out_features = c * h * w, U * L
        std = 1 / math.sqrt(K) if std is None else std
        self.weight = nn.Parameter(torch.randn(L, K, U) * std)
        self.bias = nn.Parameter(torch.zeros(U * L)) if bias else None
        self._op: torch.Tensor | None = None
        # Padded-input coordinates (y, x) and channel of every (location, patch element).
        i, j = torch.arange(L) // self.w_out, torch.arange(L) % self.w_out
        ch = torch.arange(c).repeat_interleave(patch * patch)                          # (K,)
        di, dj = (torch.arange(patch * patch) // patch).repeat(c), (torch.arange(patch * patch) % patch).repeat(c)
        y, x = i[:, None] * stride + di, j[:, None] * stride + dj                     # (L, K)
        u = torch.arange(U)
        if impl == "dense":    # FFLocal's layout: one (U*L, C*H*W) matrix; padding-only weights dropped
            yy, xx = y - padding, x - padding
            valid = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            col = (ch * h * w)[None, :] + yy * w + xx                                  # (L, K)
            row = u[None, None, :] * L + torch.arange(L)[:, None, None]                 # (L, 1, U)
            idx = row * self.in_features + col[:, :, None]                             # (L, K, U)
            keep = valid[:, :, None].expand(L, K, U).reshape(-1)
            self.register_buffer("_index", idx.reshape(-1)[keep], persistent=False)
            self.register_buffer("_weight_index", keep.nonzero().squeeze(1), persistent=False)
        elif impl == "tiled":
            th, tw = min(tile, self.h_out), min(tile, self.w_out)
            n_th, n_tw = -(-self.h_out // th), -(-self.w_out // tw)
            wh, ww = (th - 1) * stride + patch, (tw - 1) * stride + patch
            self._tiles = (th, tw, n_th, n_tw, wh, ww)
            kt, nt = c * wh * ww, U * th * tw
            tile_id = (i // th) * n_tw + j // tw                                         # (L,)
            a, b = i % th, j % tw
            row = (ch * wh * ww)[None, :] + (y - (i // th * th * stride)[:, None]) * ww \
                + (x - (j // tw * tw * stride)[:, None])                                 # (L, K)
            col = u[None, :] * th * tw + (a * tw + b)[:, None]                          # (L, U)
            idx = tile_id[:, None, None] * kt * nt + row[:, :, None] * nt + col[:, None, :]
            self.register_buffer("_index", idx.reshape(-1), persistent=False)
            self._op_shape = (n_th * n_tw, kt, nt)
            # The padded input the tiles' windows cover exactly (extra zeros, or a crop, at the end).
            self._pad = (padding, (n_tw * tw - 1) * stride + patch - w - padding,
                         padding, (n_th * th - 1) * stride + patch - h - padding)

    def operator(self) -> torch.Tensor:
        """The weights in the layout ``impl`` multiplies with: tiled (tiles, window, tile units),
        dense (U*L, C*H*W), bmm the weight itself (L, K, U)."""
        if self.impl == "bmm":
            return self.weight
        if self.impl == "dense":
            flat = self.weight.new_zeros(self.out_features * self.in_features)
            flat = flat.index_put((self._index,), self.weight.reshape(-1)[self._weight_index])
            return flat.view(self.out_features, self.in_features)
        flat = self.weight.new_zeros(math.prod(self._op_shape))
        return flat.index_put((self._index,), self.weight.reshape(-1)).view(self._op_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        op = self._op if self._op is not None else self.operator()
        b = x.shape[0]
        if self.impl == "dense":
            out = F.linear(x.reshape(b, self.in_features), op)
        else:
            x = x.reshape(b, *self.in_shape)
            if self.impl == "bmm":
                p, s = self.patch, self.stride
                cols = F.pad(x, (self.padding,) * 4).unfold(2, p, s).unfold(3, p, s).permute(2, 3, 0, 1, 4, 5)
                out = torch.bmm(cols.reshape(self.num_locations, b, self.fan_in), op)          # (L, B, U)
                out = out.permute(1, 2, 0).reshape(b, self.out_features)
            else:
                th, tw, n_th, n_tw, wh, ww = self._tiles
                s = self.stride
                cols = F.pad(x, self._pad).unfold(2, wh, th * s).unfold(3, ww, tw * s)    # (B, C, nth, ntw, wh, ww)
                cols = cols.permute(2, 3, 0, 1, 4, 5).reshape(n_th * n_tw, b, -1)
                out = torch.bmm(cols, op)                                                  # (T, B, U*th*tw)
                out = out.view(n_th, n_tw, b, self.units_per_location, th, tw).permute(2, 3, 0, 4, 1, 5)
                out = out.reshape(b, self.units_per_location, n_th * th, n_tw * tw)
                if n_th * th != self.h_out or n_tw * tw != self.w_out:   # tiles past the map's edge
                    out = out[:, :, :self.h_out, :self.w_out]
                out = out.reshape(b, self.out_features)
        return out if self.bias is None else out + self.bias

    def extra_repr(self) -> str:
        return (f"in_shape={self.in_shape}, out_shape={self.out_shape}, patch={self.patch}, stride={self.stride}, "
                f"padding={self.padding}, impl={self.impl}, bias={self.bias is not None}")


@contextlib.contextmanager
def materialized(module: nn.Module) -> Iterator[None]:
    """Within the block every ``LocalLinear`` in ``module`` multiplies with its operator made once
    on entry (in the grad mode of the entry): one scatter, and one gathered weight gradient, per
    step instead of per product. The weights must not change inside the block."""
    locals_ = [m for m in module.modules() if isinstance(m, LocalLinear)]
    try:
        for m in locals_:
            m._op = m.operator()
        yield
    finally:
        for m in locals_:
            m._op = None
