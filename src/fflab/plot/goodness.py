"""Histograms of the goodness of positive vs negative test cases, per layer (goodness.png)."""
from __future__ import annotations

import math
import re
import sys
from pathlib import Path

from ..errors import CheckpointError
from ._common import _figure, _read_config, _run_folder, _run_name, _save


def plot_goodness(run_dir: str | Path, out: str | Path | None = None) -> Path | None:
    """Per layer, histograms of positive vs negative goodness with the threshold as a vertical line.

    Reads ``goodness.safetensors`` (``pos.{i}``, ``neg.{i}``: (N,) goodness of positive and
    negative test cases at layer i; ``threshold.{i}``: (1,)). Returns None if the run has none.
    The legend gives the fraction of each kind on the correct side of the threshold.
    """
    import numpy as np
    from safetensors.torch import load_file

    run_dir = _run_folder(run_dir)
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
        ax.legend(loc="upper right", fontsize="x-small")
    for ax in axes[len(layers):]:
        ax.set_visible(False)
    fig.suptitle(f"{_run_name(run_dir, _read_config(run_dir))}: goodness of positive vs negative test cases",
                 fontsize="medium")
    return _save(fig, out if out is not None else run_dir / "goodness.png")
