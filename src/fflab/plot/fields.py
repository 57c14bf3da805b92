"""First-layer receptive fields as an image grid (receptive_fields.png): dense, locally connected
(``fflab.local.FFLocal``, ``LocalLinear``: the CIFAR-10 nets' bottom-up fields, as RGB tiles) and
conv first layers, read from ``model.safetensors``."""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from ._common import _figure, _read_config, _run_folder, _run_name, _save

# First-layer weight keys of the model kinds we know, tried in order.
_FIRST_LAYER_KEYS = ("net.layers.0.weight", "net.layers.0.up.weight", "model.layers.0.weight",
                     "model.0.weight", "model.conv1.weight")


def _first_layer_geometry(cfg: dict[str, Any]) -> dict[str, int]:
    """patch / stride / padding / in_channels of the first layer, if config.json carries them:
    top-level keys (ints, or per-layer lists), or a list of per-layer dicts (e.g. ``layers``)."""
    names = ("patch", "stride", "padding", "in_channels")
    geo: dict[str, int] = {}
    for name in names:
        v = cfg.get(name)
        if isinstance(v, (list, tuple)) and v:
            v = v[0]
        if isinstance(v, int) and not isinstance(v, bool):
            geo[name] = v
    if "patch" not in geo:
        for v in cfg.values():
            if isinstance(v, (list, tuple)) and v and isinstance(v[0], dict) and "patch" in v[0]:
                geo.update({k: v[0][k] for k in names if isinstance(v[0].get(k), int)})
                break
    return geo


def _image_side(k: int, channels: int | None) -> tuple[int, int] | None:
    """(channels, side) for K = channels * side * side, or None if K does not factor so."""
    for c in ([channels] if channels else [1, 3]):
        if k % c == 0:
            s = math.isqrt(k // c)
            if s * s * c == k:
                return c, s
    return None


def _tiles(w, select: str, n: int):
    """Pick n of the rows of w (units, D) by index or by weight norm; returns (indices, rows)."""
    import torch
    n = min(n, w.shape[0])
    if select == "norm":
        idx = w.norm(dim=1).argsort(descending=True)[:n]
    elif select == "first":
        idx = torch.arange(n)
    else:
        raise ValueError(f"select={select!r}: choose norm or first")
    return idx, w[idx]


def _mosaic(tiles, channels: int, side: int, cols: int):
    """(n, C*side*side) -> one image with 1-pixel gaps (NaN), each tile scaled to [-1, 1] by its
    own 99th percentile of |w| (so a few large weights, e.g. on the label pixels, do not wash out
    the rest). Gray tiles give (H, W); colour tiles (C=3) give (H, W, 3) in [0, 1]."""
    import numpy as np
    t = tiles.float().numpy().reshape(len(tiles), channels, side, side)
    scale = np.quantile(np.abs(t).reshape(len(t), -1), 0.99, axis=1).reshape(-1, 1, 1, 1)
    t = np.clip(t / np.maximum(scale, 1e-12), -1, 1)
    rows = math.ceil(len(t) / cols)
    img = np.full((channels, rows * (side + 1) - 1, cols * (side + 1) - 1), np.nan)
    for j, tile in enumerate(t):
        r, c = divmod(j, cols)
        img[:, r * (side + 1):r * (side + 1) + side, c * (side + 1):c * (side + 1) + side] = tile
    if channels == 1:
        return img[0]
    return np.nan_to_num((img.transpose(1, 2, 0) + 1) / 2, nan=1.0)


def plot_receptive_fields(run_dir: str | Path, out: str | Path | None = None, n: int = 64, *,
                          select: str = "norm") -> Path | None:
    """First-layer receptive fields of ``n`` units as an image grid.

    Dense weight (U, D): each unit's D weights as an image (D = 784 -> 28x28; any C*s*s with C in
    {1, 3}). Locally connected weight (L, K, U) (``fflab.local.FFLocal``): each chosen unit's
    K = C_in*patch*patch weights as a patch image, patch from config.json or sqrt(K); its location
    (row, col) on the map is printed over the tile when the map is square. Conv weight
    (U, C, k, k): each filter. ``select``: "norm" picks the units with the largest weight norm,
    "first" the first n. Red is positive, blue negative, each tile on its own scale.
    Returns None (and says why on stderr) when the run has no model or an unknown layout.
    """
    from safetensors.torch import load_file

    run_dir = _run_folder(run_dir)
    p = run_dir / "model.safetensors"

    def skip(why: str) -> None:
        print(f"fflab plot: no receptive fields for {run_dir}: {why}", file=sys.stderr)
        return None

    if not p.is_file():
        return skip("no model.safetensors")
    try:
        t = load_file(str(p))
    except Exception as e:
        raise CheckpointError(f"cannot read {p}: {e}") from None
    key = next((k for k in _FIRST_LAYER_KEYS if k in t), None)
    if key is None:
        return skip(f"none of {', '.join(_FIRST_LAYER_KEYS)} in {p.name}")
    w = t[key].detach().float()
    cfg = _read_config(run_dir)
    geo = _first_layer_geometry(cfg)
    labels: list[str] | None = None

    if w.dim() == 2:  # dense (U, D)
        shape = _image_side(w.shape[1], geo.get("in_channels"))
        if shape is None:
            return skip(f"{key} has shape {tuple(w.shape)}: {w.shape[1]} inputs are not a square image")
        channels, side = shape
        idx, tiles = _tiles(w, select, n)
        what = f"{len(idx)} of {w.shape[0]} units"
    elif w.dim() == 3:  # locally connected (L, K, U)
        num_loc, k, units = w.shape
        patch = geo.get("patch")
        if patch is not None:
            channels = geo.get("in_channels") or k // max(patch * patch, 1)
            if channels * patch * patch != k:
                return skip(f"{key} has K={k} weights per unit, not C_in*patch*patch with patch={patch}")
            shape = (channels, patch)
        else:
            shape = _image_side(k, geo.get("in_channels"))
            if shape is None:
                return skip(f"{key} has shape {tuple(w.shape)} (L, K, U) and K={k} is not C_in*patch*patch; "
                            "config.json gives no patch")
        channels, side = shape
        if channels not in (1, 3):
            return skip(f"{key}: {channels} input channels cannot be shown as an image")
        flat = w.permute(0, 2, 1).reshape(num_loc * units, k)   # unit (l, u) -> row l*U + u
        idx, tiles = _tiles(flat, select, n)
        map_side = math.isqrt(num_loc)
        if map_side * map_side == num_loc:
            labels = [f"{int(i) // units // map_side},{int(i) // units % map_side}" for i in idx]
        what = f"{len(idx)} of {num_loc * units} units ({num_loc} locations x {units}), {side}x{side} patches"
    elif w.dim() == 4:  # conv (U, C, k, k)
        if w.shape[2] != w.shape[3] or w.shape[1] not in (1, 3):
            return skip(f"{key} has shape {tuple(w.shape)}: not (U, 1 or 3, k, k)")
        channels, side = w.shape[1], w.shape[2]
        idx, tiles = _tiles(w.flatten(1), select, n)
        what = f"{len(idx)} of {w.shape[0]} filters"
    else:
        return skip(f"{key} has shape {tuple(w.shape)}: unknown layout")

    cols = math.ceil(math.sqrt(len(idx)))
    img = _mosaic(tiles, channels, side, cols)
    fig = _figure(figsize=(7, 7.6), layout="constrained")
    ax = fig.subplots()
    if channels == 1:
        import matplotlib
        cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="white")
        im = ax.imshow(img, cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
        fig.colorbar(im, ax=ax, shrink=0.6, label="weight / unit's 99th pct |w|")
    else:
        ax.imshow(img, interpolation="nearest")
    if labels is not None:
        fs = max(4.0, min(8.0, 40.0 / cols))
        for j, lab in enumerate(labels):
            r, c = divmod(j, cols)
            ax.text(c * (side + 1), r * (side + 1), lab, fontsize=fs, va="top", ha="left", color="k",
                    bbox=dict(boxstyle="square,pad=0.05", fc="white", ec="none", alpha=0.6))
    ax.set_xticks([])
    ax.set_yticks([])
    order = "largest weight norm" if select == "norm" else "first"
    ax.set_title(f"{_run_name(run_dir, cfg)}\nfirst-layer receptive fields: {what}\n{order}"
                 + ("; tile label = location row,col" if labels else ""), fontsize="medium")
    return _save(fig, out if out is not None else run_dir / "receptive_fields.png")
