"""A gallery of hybrid negative images (paper section 3.2): image A, image B, the mask, the hybrid.

The masks and pairings are ``fflab.hybrid``'s; this module only draws them.
"""
from __future__ import annotations

from pathlib import Path

import torch


def _as_images(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, ...) -> (B, H, W) gray or (B, H, W, 3) colour, float on the CPU, for imshow."""
    x = x.detach().float().cpu()
    if x.dim() == 2:
        return x.view(-1, h, w)
    if x.dim() == 4 and x.shape[1] == 1:
        return x[:, 0]
    if x.dim() == 4:
        # Colour: imshow needs RGB in [0, 1]; rescale each image (the data may be standardized).
        x = x.permute(0, 2, 3, 1)
        lo, hi = x.amin((1, 2, 3), keepdim=True), x.amax((1, 2, 3), keepdim=True)
        return (x - lo) / (hi - lo).clamp_min(1e-12)
    return x


def negatives_gallery(x: torch.Tensor, path: str | Path, *, n: int = 8, blur_passes: int = 6,
                      seed: int = 0, labels: torch.Tensor | None = None) -> Path:
    """Write a PNG grid of ``n`` hybrid negatives made from the first ``n`` images of ``x``.

    ``x``: (B, H*W) square images, (B, H, W) or (B, C, H, W); ``labels`` (optional) makes A and B
    of different classes (see ``fflab.hybrid.hybrid_negatives``). Rows: image A, image B, mask,
    hybrid. The figure is drawn without pyplot, so no global backend state changes.
    """
    from matplotlib.figure import Figure

    from ..hybrid import hybrid_negatives

    n = min(n, x.shape[0])
    g = torch.Generator().manual_seed(seed)
    xs = x[:n].detach().cpu()
    ys = labels[:n].cpu() if labels is not None else None
    x_neg, mask, idx_a, idx_b = hybrid_negatives(xs, generator=g, blur_passes=blur_passes, labels=ys)
    h, w = mask.shape[-2:]
    rows = [("A", _as_images(xs[idx_a], h, w)), ("B", _as_images(xs[idx_b], h, w)),
            ("mask", mask), ("hybrid", _as_images(x_neg, h, w))]
    fig = Figure(figsize=(1.2 * n, 1.2 * len(rows) + 0.2))
    axes = fig.subplots(len(rows), n, squeeze=False)
    for r, (name, imgs) in enumerate(rows):
        for c in range(n):
            ax = axes[r][c]
            # Masks get a fixed 0-1 scale (a constant mask would otherwise be autoscaled).
            scale = dict(vmin=0.0, vmax=1.0) if name == "mask" else {}
            ax.imshow(imgs[c].numpy(), cmap="gray" if imgs[c].dim() == 2 else None,
                      interpolation="nearest", **scale)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name)
    fig.suptitle(f"hybrid negatives, {blur_passes} blur passes")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    return path
