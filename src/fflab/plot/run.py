"""Every figure that applies to one run folder, written into it."""
from __future__ import annotations

from pathlib import Path

from ._common import _run_path
from .curves import plot_iterations, plot_learning_curves
from .fields import plot_receptive_fields
from .goodness import plot_goodness
from .settling import plot_settling


def plot_run(run_dir: str | Path) -> list[Path]:
    """Every plot that applies to the run, as PNGs in its folder: curves.png, goodness.png,
    receptive_fields.png, iterations.png, settling.png. Returns the paths written."""
    run_dir = _run_path(run_dir)
    written = [plot_learning_curves(run_dir)]
    for fn in (plot_goodness, plot_receptive_fields, plot_iterations, plot_settling):
        p = fn(run_dir)
        if p is not None:
            written.append(p)
    return written
