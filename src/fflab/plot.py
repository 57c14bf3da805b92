"""Figures from run folders: learning curves, goodness histograms, receptive fields, comparisons.

Reads run folders only (``config.json``, ``metrics.jsonl``, ``goodness.safetensors``,
``model.safetensors``; see ``fflab.runs``) and never touches training code, so it can plot a run
that is still training. Matplotlib is imported inside the functions, so ``import fflab`` stays
light, and figures are drawn with ``matplotlib.figure.Figure`` rather than pyplot: no window, no
global backend switch (calling these from a notebook leaves its backend alone), and PNGs are
rendered by Agg. Every PNG is written to a temporary file and renamed.

Metric keys: any key containing ``error`` is an error curve; ``train_``/``test_`` prefixes give the
split, the rest names the evaluation method (``test_error_goodness`` -> test, goodness;
``test_error`` -> test, error). Keys with ``iter{k}`` (recurrent runs, e.g. ``test_error_iter3``)
are errors after k iterations: ``plot_iterations`` draws them against k, and the learning curves
show only the last iteration of each.
"""
from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path
from typing import Any, Sequence

from .errors import CheckpointError

__all__ = [
    "plot_learning_curves", "plot_goodness", "plot_receptive_fields", "plot_iterations",
    "plot_run", "plot_compare", "read_run_metrics",
]

_ITER = re.compile(r"_?iter(\d+)")
_SPLIT_STYLE = {"test": "-", "train": "--", "": ":"}


# ----------------------------------------------------------------------------- reading
def _run_path(run_dir: str | Path) -> Path:
    p = Path(run_dir)
    if not p.is_dir():
        raise CheckpointError(f"{p} is not a run folder (no such directory)")
    if not (p / "metrics.jsonl").is_file():
        raise CheckpointError(f"{p} is not a run folder (no metrics.jsonl)")
    return p


def read_run_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The per-epoch records of ``metrics.jsonl``.

    A damaged last line is skipped (the run may be writing it right now); a damaged line before it,
    or a file with no records, is a ``CheckpointError``.
    """
    from .runs import read_metrics   # the parser resume uses: same rules for a torn last line
    p = _run_path(run_dir)
    records = read_metrics(p)
    if not records:
        raise CheckpointError(f"{p / 'metrics.jsonl'} holds no epochs yet")
    return records


def _read_config(run_dir: Path) -> dict[str, Any]:
    """config.json as a plain dict ({} when absent or unreadable: plots do not need it)."""
    try:
        d = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return d if isinstance(d, dict) else {}


def _run_name(run_dir: Path, cfg: dict[str, Any]) -> str:
    what = cfg.get("recipe") or cfg.get("kind") or "run"
    return f"{what}  ({run_dir.name})"


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(epochs, values) for the records where ``key`` is a finite number."""
    xs, ys = [], []
    for i, r in enumerate(records):
        v = _number(r.get(key))
        if v is not None:
            xs.append(float(r.get("epoch", i + 1)))
            ys.append(v)
    return xs, ys


def _error_keys(records: list[dict[str, Any]]) -> list[str]:
    keys: dict[str, None] = {}
    for r in records:
        for k, v in r.items():
            if "error" in k and _number(v) is not None:
                keys[k] = None
    return sorted(keys)


def _split_method(key: str) -> tuple[str, str]:
    """'test_error_goodness' -> ('test', 'goodness'); 'test_error' -> ('test', 'error')."""
    split = ""
    for s in ("test", "train"):
        if key.startswith(s + "_"):
            split, key = s, key[len(s) + 1:]
            break
    method = key.replace("error_", "", 1) if key.startswith("error_") else key
    return split, method


def _curve_keys(keys: list[str]) -> list[str]:
    """Error keys for the learning curves: every plain key, and of ``iter{k}`` keys only the
    highest k of each series (plot_iterations shows the rest)."""
    plain = [k for k in keys if not _ITER.search(k)]
    last: dict[str, tuple[int, str]] = {}
    for k in keys:
        m = _ITER.search(k)
        if m:
            base = _ITER.sub("", k)
            if base not in last or int(m.group(1)) > last[base][0]:
                last[base] = (int(m.group(1)), k)
    return plain + [k for base, (_, k) in sorted(last.items()) if base not in plain]


def _percent(v: float) -> str:
    return f"{100 * v:.2f}%"


# ----------------------------------------------------------------------------- drawing helpers
def _figure(**kw):
    from matplotlib.figure import Figure
    return Figure(**kw)


def _save(fig, out: str | Path) -> Path:
    from .runs import _atomic_write  # temp file + rename: a reader never sees half a PNG
    out = Path(out)
    _atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    return out


def _error_axis(ax, values: list[float]) -> None:
    """Percent labels; log scale when every error is positive (a zero error has no place on a log
    axis), with labelled minor ticks when the errors span too few decades for the major ones."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    fmt = FuncFormatter(lambda v, _: f"{100 * v:.3g}%")
    if values and min(values) > 0:
        ax.set_yscale("log")
        decades = math.log10(max(values) / min(values))
        if decades < 2.5:
            subs = (2, 3, 4, 5, 6, 7, 8, 9) if decades < 1 else (2, 5)
            ax.yaxis.set_minor_locator(LogLocator(subs=subs))
            ax.yaxis.set_minor_formatter(fmt)
        else:
            ax.yaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_formatter(fmt)
    ax.grid(True, which="major", alpha=0.3)


# ----------------------------------------------------------------------------- learning curves
def plot_learning_curves(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Train and test error per epoch for every error metric (top), train loss (bottom).

    Test curves are solid, train curves dashed, one colour per evaluation method (for FF runs:
    per-label goodness and one-pass softmax). Written to ``out`` (default ``RUN_DIR/curves.png``).
    """
    run_dir = _run_path(run_dir)
    records = read_run_metrics(run_dir)
    cfg = _read_config(run_dir)
    keys = _curve_keys(_error_keys(records))
    methods = list(dict.fromkeys(_split_method(k)[1] for k in keys))

    fig = _figure(figsize=(8, 7), layout="constrained")
    ax_err, ax_loss = fig.subplots(2, 1, sharex=True, height_ratios=(2, 1))
    from matplotlib.ticker import MaxNLocator
    colors = [f"C{i % 10}" for i in range(len(methods))]
    all_errors: list[float] = []
    for k in keys:
        split, method = _split_method(k)
        xs, ys = _series(records, k)
        all_errors += ys
        ax_err.plot(xs, ys, _SPLIT_STYLE[split], marker="o", ms=3,
                    color=colors[methods.index(method)], label=f"{split} {method}".strip())
    if keys:
        _error_axis(ax_err, all_errors)
        ax_err.legend(fontsize="small", ncol=2)
    else:
        ax_err.text(0.5, 0.5, "no error metrics yet", ha="center", va="center", transform=ax_err.transAxes)
    ax_err.set_ylabel("error")

    xs, ys = _series(records, "train_loss")
    ax_loss.plot(xs, ys, "-", marker="o", ms=3, color="k")
    if ys and min(ys) > 0 and max(ys) / min(ys) > 20:
        ax_loss.set_yscale("log")
    ax_loss.set_ylabel("train loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_loss.grid(True, alpha=0.3)

    final = []
    for split in ("test", "train"):
        parts = [f"{_split_method(k)[1]} {_percent(_series(records, k)[1][-1])}"
                 for k in keys if _split_method(k)[0] == split]
        if parts:
            final.append(f"final {split}: " + ", ".join(parts))
    epochs = records[-1].get("epoch", len(records))
    wall = _number(records[-1].get("wall_time_s"))
    head = _run_name(run_dir, cfg) + f" - {epochs} epochs" + (f", {wall:.3g} s" if wall is not None else "")
    fig.suptitle("\n".join([head, *final]), fontsize="medium")
    return _save(fig, out if out is not None else run_dir / "curves.png")


# ----------------------------------------------------------------------------- goodness
def plot_goodness(run_dir: str | Path, out: str | Path | None = None) -> Path | None:
    """Per layer, histograms of positive vs negative goodness with the threshold as a vertical line.

    Reads ``goodness.safetensors`` (``pos.{i}``, ``neg.{i}``: (N,) goodness of positive and
    negative test cases at layer i; ``threshold.{i}``: (1,)). Returns None if the run has none.
    The legend gives the fraction of each kind on the correct side of the threshold.
    """
    import numpy as np
    from safetensors.torch import load_file

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir} is not a run folder (no such directory)")
    p = run_dir / "goodness.safetensors"
    if not p.is_file():
        return None
    try:
        t = load_file(str(p))
    except Exception as e:  # safetensors raises several types for a damaged file
        raise CheckpointError(f"cannot read {p}: {e}") from None
    layers = sorted({int(k.split(".")[1]) for k in t if re.fullmatch(r"(pos|neg)\.\d+", k)})
    if not layers:
        print(f"fflab plot: {p} has no pos.{{i}}/neg.{{i}} entries; no goodness plot", file=sys.stderr)
        return None

    ncols = min(len(layers), 4)
    nrows = math.ceil(len(layers) / ncols)
    fig = _figure(figsize=(3.6 * ncols, 3.0 * nrows + 0.5), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, i in zip(axes, layers):
        pos = t[f"pos.{i}"].float().flatten().numpy() if f"pos.{i}" in t else np.zeros(0)
        neg = t[f"neg.{i}"].float().flatten().numpy() if f"neg.{i}" in t else np.zeros(0)
        thr = t.get(f"threshold.{i}")
        thr = float(thr.flatten()[0]) if thr is not None and thr.numel() == 1 else None
        both = np.concatenate([pos, neg])
        both = both[np.isfinite(both)]
        if both.size:
            # Clip the long upper tail so the bulk of both distributions stays visible.
            lo, hi = float(both.min()), float(np.quantile(both, 0.995))
            if thr is not None:
                lo, hi = min(lo, thr), max(hi, thr)
            bins = np.linspace(lo, hi if hi > lo else lo + 1, 61)
            for vals, name, color, right in ((pos, "positive", "C0", ">"), (neg, "negative", "C3", "<")):
                if not vals.size:
                    continue
                label = name
                if thr is not None:
                    ok = (vals > thr) if right == ">" else (vals < thr)
                    label += f" ({100 * ok.mean():.1f}% {right} threshold)"
                ax.hist(np.clip(vals, bins[0], bins[-1]), bins=bins, alpha=0.55, color=color, label=label)
        if thr is not None:
            ax.axvline(thr, color="k", ls="--", lw=1, label=f"threshold {thr:g}")
        ax.set_title(f"layer {i}")
        ax.set_xlabel("goodness (top 0.5% piled into the last bin)")
        ax.set_ylabel("cases")
        ax.legend(fontsize="x-small")
    for ax in axes[len(layers):]:
        ax.set_visible(False)
    fig.suptitle(f"{_run_name(run_dir, _read_config(run_dir))}: goodness of positive vs negative test cases",
                 fontsize="medium")
    return _save(fig, out if out is not None else run_dir / "goodness.png")


# ----------------------------------------------------------------------------- receptive fields
# First-layer weight keys of the model kinds we know, tried in order.
_FIRST_LAYER_KEYS = ("net.layers.0.weight", "model.0.weight", "model.conv1.weight")


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

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir} is not a run folder (no such directory)")
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


# ----------------------------------------------------------------------------- iterations
def plot_iterations(run_dir: str | Path, out: str | Path | None = None) -> Path | None:
    """Error against the number of iterations (``*_iter{k}`` keys of a recurrent run) at the last
    evaluated epoch. Returns None if the run has no such keys."""
    run_dir = _run_path(run_dir)
    records = read_run_metrics(run_dir)
    rec = next((r for r in reversed(records) if any(_ITER.search(k) and "error" in k for k in r)), None)
    if rec is None:
        return None
    series: dict[str, list[tuple[int, float]]] = {}
    for k, v in rec.items():
        m = _ITER.search(k)
        v = _number(v)
        if m and "error" in k and v is not None:
            series.setdefault(_ITER.sub("", k), []).append((int(m.group(1)), v))
    methods = list(dict.fromkeys(_split_method(b)[1] for b in sorted(series)))
    fig = _figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    values = []
    for base in sorted(series):
        split, method = _split_method(base)
        pts = sorted(series[base])
        values += [v for _, v in pts]
        ax.plot([k for k, _ in pts], [v for _, v in pts], _SPLIT_STYLE[split], marker="o", ms=4,
                color=f"C{methods.index(method) % 10}", label=f"{split} {method}".strip())
    _error_axis(ax, values)
    ax.set_xlabel("iterations")
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("error")
    ax.legend(fontsize="small")
    ax.set_title(f"{_run_name(run_dir, _read_config(run_dir))}\nerror vs iterations, epoch {rec.get('epoch', '?')}",
                 fontsize="medium")
    return _save(fig, out if out is not None else run_dir / "iterations.png")


# ----------------------------------------------------------------------------- all / compare
def plot_run(run_dir: str | Path) -> list[Path]:
    """Every plot that applies to the run, as PNGs in its folder: curves.png, goodness.png,
    receptive_fields.png, iterations.png, settling.png. Returns the paths written."""
    run_dir = _run_path(run_dir)
    written = [plot_learning_curves(run_dir)]
    from .recurrent import plot_settling  # settling.png of recurrent runs (paper section 4)
    for fn in (plot_goodness, plot_receptive_fields, plot_iterations, plot_settling):
        p = fn(run_dir)
        if p is not None:
            written.append(p)
    return written


def _labels(run_dirs: list[Path]) -> list[str]:
    """Folder names, or parent/name where names repeat."""
    names = [p.name for p in run_dirs]
    return [f"{p.parent.name}/{p.name}" if names.count(p.name) > 1 else p.name for p in run_dirs]


def plot_compare(run_dirs: Sequence[str | Path], out: str | Path,
                 metric: str | Sequence[str] = "test_error_goodness") -> Path:
    """Several runs' ``metric`` per epoch on one axis.

    ``metric`` may be a sequence: each run uses the first of them it has (e.g.
    ``("test_error_goodness", "test_error")`` to put FF and backprop runs on one plot; the legend
    then names the metric where it is not the first). A run without any of them is skipped with a
    note on stderr; if no run has one, ``CheckpointError`` lists the error keys there are.
    """
    metrics = [metric] if isinstance(metric, str) else list(metric)
    paths = [_run_path(d) for d in run_dirs]
    fig = _figure(figsize=(8, 5), layout="constrained")
    ax = fig.subplots()
    values: list[float] = []
    plotted = 0
    available: set[str] = set()
    used: dict[str, None] = {}
    for i, (p, label) in enumerate(zip(paths, _labels(paths))):
        records = read_run_metrics(p)
        keys = _error_keys(records)
        available.update(keys)
        m = next((m for m in metrics if m in keys), None)
        if m is None:
            print(f"fflab plot: {p} has no {' or '.join(metrics)}; left out of the comparison", file=sys.stderr)
            continue
        xs, ys = _series(records, m)
        values += ys
        used[m] = None
        recipe = _read_config(p).get("recipe")
        label += (f" [{recipe}]" if recipe else "") + (f" ({m})" if m != metrics[0] else "")
        label += f": {_percent(ys[-1])}"
        ax.plot(xs, ys, "-", marker="o", ms=3, color=f"C{i % 10}", label=label)
        plotted += 1
    if not plotted:
        raise CheckpointError(f"no run has {' or '.join(metrics)}; error metrics there are: "
                              f"{', '.join(sorted(available)) or 'none'}")
    _error_axis(ax, values)
    ax.set_xlabel("epoch")
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(next(iter(used)) if len(used) == 1 else "error")
    ax.legend(fontsize="small")
    ax.set_title(f"{' / '.join(used)}: {plotted} runs (final value in the legend)", fontsize="medium")
    return _save(fig, out)
