"""Hybrid-image negative data for unsupervised FF (paper section 3.2).

The paper makes negative data that has very different long-range correlations but very similar
short-range correlations to real data: a random bit image is blurred repeatedly with the filter
[1/4, 1/2, 1/4] in the horizontal and the vertical direction and thresholded at 0.5, giving a mask
of large regions of ones and zeros; the negative image is ``mask * A + (1 - mask) * B`` for two
different real digit images A and B. A layer can then only tell a negative from a positive by
looking at shapes, not at local stroke statistics.

Not stated in the paper, chosen here (see ``compare_blur_passes`` for the measurements):
- the number of blur passes: default 6, the paper's "about 6". Measured on 28x28 masks
  (5000 masks per setting; agreement = fraction of adjacent pixel pairs with equal values,
  run = mean run length in pixels along rows and columns):

      passes      0     1     2     4     6     8    10    20    50
      agreement 0.50  0.69  0.79  0.85  0.88  0.89  0.90  0.93  0.96
      run       1.9   3.0   4.3   5.5   6.5   7.2   7.8  10.1  13.6

  Region size grows fast up to about 4 passes and slowly after; the fraction of ones is 0.50 at
  every setting, and its spread over masks grows with the passes (std 0.09 at 6, 0.22 at 50,
  where 3% of masks are over 95% one image). 6 gives regions of stroke size and larger while
  every mask still mixes both images;
- the border handling of the blur: replicate padding, so border pixels are blurred like interior
  ones (zero padding would pull border values below 0.5 and make the border mostly zeros, i.e.
  mostly image B);
- ties (a blurred value of exactly 0.5; the blur is computed exactly, and ties do occur after
  one or more passes) take the pixel's original random bit, so the mask distribution stays
  symmetric in ones and zeros;
- A and B are paired by a random derangement of the batch, so every image is used once as A and
  once as B and never with itself. Requiring different *classes* is optional (``labels=``) and off
  by default: the unsupervised model never sees labels.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "make_masks", "hybrid_negatives", "neighbour_agreement", "mean_run_length",
    "compare_blur_passes",
]


def _blur(v: torch.Tensor, passes: int) -> torch.Tensor:
    """The paper's [1/4, 1/2, 1/4] filter, horizontally then vertically, ``passes`` times.

    (n, 1, H, W) -> same shape. Borders are replicated. Written as shifted sums rather than a
    conv2d: it reads as the filter and was faster on CPU.
    """
    for _ in range(passes):
        p = F.pad(v, (1, 1, 0, 0), mode="replicate")
        v = 0.25 * (p[..., :-2] + p[..., 2:]) + 0.5 * v
        p = F.pad(v, (0, 0, 1, 1), mode="replicate")
        v = 0.25 * (p[..., :-2, :] + p[..., 2:, :]) + 0.5 * v
    return v


def make_masks(n: int, *, height: int = 28, width: int = 28, blur_passes: int = 6,
               generator: torch.Generator | None = None,
               device: torch.device | str | None = None) -> torch.Tensor:
    """``n`` random masks with large regions of ones and zeros: (n, H, W) float in {0, 1}.

    A random bit image is blurred ``blur_passes`` times (each pass horizontal then vertical,
    replicate padding) and thresholded at 0.5. The bits are drawn on the generator's device (or
    ``device``); the masks are returned there.
    """
    if blur_passes < 0:
        raise ValueError(f"blur_passes must be >= 0, got {blur_passes}")
    if device is None:
        device = generator.device if generator is not None else "cpu"
    bits = torch.randint(0, 2, (n, 1, height, width), generator=generator, device=device)
    # Each pass multiplies the denominator by 16, so the blurred values are exact dyadic
    # rationals in float32 up to 6 passes and in float64 up to 13: the 0.5 comparison and the tie
    # rule are exact there (beyond 13 passes rounding only decides rare near-ties).
    dtype = torch.float32 if blur_passes <= 6 else torch.float64
    v = _blur(bits.to(dtype), blur_passes)
    mask = (v > 0.5) | ((v == 0.5) & bits.bool())
    return mask.squeeze(1).float()


def _image_shape(x: torch.Tensor) -> tuple[int, int]:
    """(H, W) of a batch given as (B, H*W) square images, (B, H, W) or (B, C, H, W)."""
    if x.dim() == 2:
        side = math.isqrt(x.shape[1])
        if side * side != x.shape[1]:
            raise ValueError(f"flat images of size {x.shape[1]} are not square; pass (B, C, H, W)")
        return side, side
    if x.dim() in (3, 4):
        return x.shape[-2], x.shape[-1]
    raise ValueError(f"expected (B, H*W), (B, H, W) or (B, C, H, W) images, got shape {tuple(x.shape)}")


def _derangement(n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """A random permutation with no fixed point: a random cyclic order, each index -> its successor."""
    perm = torch.randperm(n, generator=generator, device=device)
    partner = torch.empty_like(perm)
    partner[perm] = perm.roll(-1)
    return partner


def _other_class(labels: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """For each i, an index j drawn uniformly from the cases whose label differs from labels[i].

    Sort-based and branch-free (no host-device sync besides the feasibility check): in sorted
    order the class of i is one block [lo, hi); a uniform rank among the B - (hi - lo) others
    skips over that block.
    """
    b = labels.shape[0]
    sorted_labels, order = labels.sort()
    lo = torch.searchsorted(sorted_labels, labels, side="left")
    hi = torch.searchsorted(sorted_labels, labels, side="right")
    n_other = b - (hi - lo)
    if bool((n_other == 0).any()):
        raise ValueError("labels= needs at least two classes in the batch to pair different classes")
    u = torch.rand(b, generator=generator, device=labels.device)
    rank = (u * n_other).long().clamp_max(n_other - 1)
    pos = torch.where(rank < lo, rank, rank + (hi - lo))
    return order[pos]


def hybrid_negatives(x: torch.Tensor, *, generator: torch.Generator | None = None,
                     blur_passes: int = 6, labels: torch.Tensor | None = None,
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hybrid negative images ``mask * A + (1 - mask) * B`` from a batch of real images.

    Args:
        x: real images, (B, H*W) with square images (e.g. (B, 784)), (B, H, W) or (B, C, H, W);
            with channels, one mask is shared by all channels of an image.
        generator: source of all randomness (masks and pairing).
        blur_passes: blur passes of the mask (see ``make_masks``).
        labels: optional (B,) classes. If given, A and B are also of different classes (the
            partner of each case whose derangement partner has the same class is redrawn uniformly
            from the other classes). Optional: the unsupervised model does not use labels.

    Returns:
        ``(x_neg, mask, idx_a, idx_b)``: x_neg has the shape of x; mask is (B, H, W) in {0, 1};
        ``x_neg[i] = mask[i] * x[idx_a[i]] + (1 - mask[i]) * x[idx_b[i]]`` with
        ``idx_a = arange(B)`` and ``idx_b[i] != idx_a[i]`` for every i.
    """
    b = x.shape[0]
    if b < 2:
        raise ValueError(f"hybrids need two different images; got a batch of {b}")
    h, w = _image_shape(x)
    # Indices are drawn on the generator's device, then moved to the images.
    gen_device = generator.device if generator is not None else torch.device("cpu")
    mask = make_masks(b, height=h, width=w, blur_passes=blur_passes, generator=generator,
                      device=gen_device)
    idx_b = _derangement(b, generator, gen_device)
    if labels is not None:
        if labels.shape != (b,):
            raise ValueError(f"labels must have shape ({b},), got {tuple(labels.shape)}")
        labels = labels.to(gen_device)
        redrawn = _other_class(labels, generator)
        idx_b = torch.where(labels[idx_b] == labels, redrawn, idx_b)
    mask, idx_b = mask.to(x.device), idx_b.to(x.device)
    idx_a = torch.arange(b, device=x.device)
    m = mask.to(x.dtype)
    if x.dim() == 2:
        m = m.flatten(1)          # (B, H*W)
    elif x.dim() == 4:
        m = m.unsqueeze(1)        # (B, 1, H, W): broadcast over channels
    x_neg = m * x + (1 - m) * x[idx_b]   # x[idx_a] is x itself
    return x_neg, mask, idx_a, idx_b


def neighbour_agreement(masks: torch.Tensor) -> float:
    """Fraction of horizontally or vertically adjacent pixel pairs with the same value. (n, H, W).

    0.5 for independent random bits, 1 for constant masks: a measure of region size.
    """
    horiz = masks[..., :, 1:] == masks[..., :, :-1]
    vert = masks[..., 1:, :] == masks[..., :-1, :]
    return ((horiz.sum() + vert.sum()).item()) / (horiz.numel() + vert.numel())


def mean_run_length(masks: torch.Tensor) -> float:
    """Mean length (pixels) of the runs of equal values along rows and columns. (n, H, W).

    A row of W pixels with c changes of value holds c + 1 runs; 2 for independent random bits
    (on an infinite row), W or H for constant masks.
    """
    n, h, w = masks.shape
    runs_rows = n * h + (masks[..., :, 1:] != masks[..., :, :-1]).sum().item()
    runs_cols = n * w + (masks[..., 1:, :] != masks[..., :-1, :]).sum().item()
    return 2 * n * h * w / (runs_rows + runs_cols)


def compare_blur_passes(passes: tuple[int, ...] = (0, 1, 2, 4, 6, 8, 10), *, n: int = 2000,
                        height: int = 28, width: int = 28,
                        generator: torch.Generator | None = None) -> dict[int, dict[str, float]]:
    """Mask statistics for several numbers of blur passes (used to choose the default).

    For each setting: ``neighbour_agreement``, ``mean_run_length``, ``fraction_ones`` (mean over
    all masks), ``fraction_ones_std`` (std over masks of each mask's fraction of ones) and
    ``degenerate`` (fraction of masks with under 5% or over 95% ones, whose hybrid is almost one
    real image and so a poor negative).
    """
    out: dict[int, dict[str, float]] = {}
    for p in passes:
        m = make_masks(n, height=height, width=width, blur_passes=p, generator=generator)
        ones = m.mean((1, 2))
        out[p] = {
            "neighbour_agreement": neighbour_agreement(m),
            "mean_run_length": mean_run_length(m),
            "fraction_ones": ones.mean().item(),
            "fraction_ones_std": ones.std().item(),
            "degenerate": ((ones < 0.05) | (ones > 0.95)).float().mean().item(),
        }
    return out
