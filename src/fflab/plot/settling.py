"""How a recurrent net settles (paper section 4): goodness of each layer at each iteration for
the correct label against the wrong ones (settling.png).

Reads ``settling.safetensors`` (``fflab.runs.SETTLING_FILE``), written by the recurrent
experiment's ``save_settling``: ``goodness`` (B, N, T+1, L) goodness of each hidden layer at each
iteration with each of the N labels clamped at the top (t = 0: the bottom-up initialization),
``labels`` (B,), ``threshold`` (L,), ``window`` (2,) the test window, ``eval_layers`` the layers
the test score sums; metadata ``goodness`` and ``damping``. No training code is imported.
"""
from __future__ import annotations

import math
from pathlib import Path

from ..errors import CheckpointError
from ._common import _figure, _run_folder, _save


def plot_settling(run_dir: str | Path, out: str | Path | None = None) -> Path | None:
    """Goodness of each layer at each iteration, correct label vs wrong labels (settling.png).

    Returns None if the run has no ``settling.safetensors``. One panel per hidden layer plus one
    for the test score (goodness summed over the evaluated layers): the mean over test images for
    the correct label (solid, with the 25-75% band), for the average wrong label (dashed) and for
    the best wrong label of each image (dotted); the test window is shaded and the threshold drawn.
    Written to ``out`` (default ``RUN_DIR/settling.png``).
    """
    import numpy as np
    import torch
    import torch.nn.functional as F
    from safetensors import safe_open

    from ..runs import SETTLING_FILE

    run_dir = _run_folder(run_dir)
    p = run_dir / SETTLING_FILE
    if not p.is_file():
        return None
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
            t = {k: f.get_tensor(k) for k in f.keys()}
        g = t["goodness"].double()                     # (B, N, T+1, L)
        y = t["labels"].long()
    except Exception as e:  # safetensors raises several types for a damaged file; KeyError for a bad one
        raise CheckpointError(f"cannot read {p}: {e}") from None
    b, n_cls, steps, n_layers = g.shape
    thr = t.get("threshold", torch.full((n_layers,), float("nan"))).double()
    window = [int(v) for v in t.get("window", torch.tensor([1, steps - 1]))]
    eval_layers = [int(v) for v in t.get("eval_layers", torch.arange(n_layers))]

    correct = F.one_hot(y, n_cls).bool()                                  # (B, N)
    panels = [(f"layer {i}", g[..., i], float(thr[i])) for i in range(n_layers)]
    total = g[..., eval_layers].sum(-1)
    panels.append((f"test score: sum over layers {','.join(map(str, eval_layers))}", total, float("nan")))

    ncols = min(len(panels), 4)
    nrows = math.ceil(len(panels) / ncols)
    fig = _figure(figsize=(3.8 * ncols, 3.2 * nrows + 0.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    ts = np.arange(steps)
    for ax, (title, gl, th) in zip(axes, panels):                         # gl: (B, N, T+1)
        pos = gl[correct].numpy()                                         # (B, T+1)
        wrong = gl.masked_fill(correct[..., None], float("nan"))
        mean_wrong = torch.nanmean(wrong, dim=1).numpy()                  # (B, T+1)
        best_wrong = gl.masked_fill(correct[..., None], -float("inf")).amax(1).numpy()
        q25, q75 = np.quantile(pos, [0.25, 0.75], axis=0)
        ax.axvspan(window[0] - 0.5, window[1] + 0.5, color="0.9", label=f"test window {window[0]}-{window[1]}")
        ax.fill_between(ts, q25, q75, color="C0", alpha=0.2)
        ax.plot(ts, pos.mean(0), "-", marker="o", ms=3, color="C0", label="correct label")
        ax.plot(ts, mean_wrong.mean(0), "--", marker="o", ms=3, color="C3", label="wrong label (mean)")
        ax.plot(ts, best_wrong.mean(0), ":", marker="o", ms=3, color="C1", label="best wrong label")
        if math.isfinite(th):
            ax.axhline(th, color="k", ls="--", lw=0.8, label=f"threshold {th:g}")
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel("iteration (0 = bottom-up init)")
        ax.set_ylabel(f"goodness ({meta.get('goodness', '?')})")
        ax.grid(True, alpha=0.3)
    axes[0].legend(loc="upper right", fontsize="x-small")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    acc = (total[:, :, window[0]:window[1] + 1].mean(-1).argmax(1) == y).double().mean().item()
    fig.suptitle(f"{run_dir.name}: settling of {b} test images, damping {meta.get('damping', '?')} "
                 f"(mean over images; band: 25-75% for the correct label); window error {100 * (1 - acc):.2f}%",
                 fontsize="medium")
    return _save(fig, out if out is not None else run_dir / "settling.png")
