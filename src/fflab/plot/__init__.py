"""Figures: learning curves, goodness histograms, receptive fields, settling of a recurrent net,
comparisons of runs, and the gallery of hybrid negative images.

Run-folder figures read run folders only (``config.json``, ``metrics.jsonl``,
``goodness.safetensors``, ``model.safetensors``, ``settling.safetensors``; see ``fflab.runs``) and
never touch training code, so they can plot a run that is still training. Matplotlib is imported
inside the functions, so ``import fflab`` stays light, and figures are drawn with
``matplotlib.figure.Figure`` rather than pyplot: no window, no global backend switch (calling these
from a notebook leaves its backend alone), and PNGs are rendered by Agg. Every run-folder PNG is
written to a temporary file and renamed.

Metric keys: any key containing ``error`` is an error curve; ``train_``/``test_`` prefixes give the
split, the rest names the evaluation method (``test_error_goodness`` -> test, goodness;
``test_error`` -> test, error). Keys with ``iter{k}`` (recurrent runs, paper section 4, e.g.
``test_error_iter3``) are errors after k iterations: ``plot_iterations`` draws them against k, and
the learning curves show only the last iteration of each.

Modules: ``_common`` (reading run folders, shared drawing helpers), ``curves`` (learning curves,
iterations, comparisons), ``goodness``, ``fields`` (receptive fields), ``settling``, ``negatives``
(hybrid negatives, paper section 3.2) and ``run`` (every figure of one run).
"""
from __future__ import annotations

from ._common import read_run_metrics
from .curves import plot_compare, plot_iterations, plot_learning_curves
from .fields import plot_receptive_fields
from .goodness import plot_goodness
from .negatives import negatives_gallery
from .run import plot_run
from .settling import plot_settling

__all__ = [
    "plot_learning_curves", "plot_goodness", "plot_receptive_fields", "plot_iterations",
    "plot_settling", "negatives_gallery", "plot_run", "plot_compare", "read_run_metrics",
]
