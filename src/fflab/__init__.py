"""fflab: the Forward-Forward algorithm (Hinton 2022) in PyTorch.

Public API re-exported here; the core import stays light (no matplotlib).
"""
__version__ = "0.2.0"

from .errors import CheckpointError, ConfigError, DataError, FFLabError, TrainingDiverged
from .fast import fast_update
from .hybrid import hybrid_negatives, make_masks
from .layers import FFDense, FFLayer, normalize
from .local import FFLocal
from .negatives import hard_wrong_labels, overlay_label, uniform_wrong_labels
from .nets import CNN, FFNet, SoftmaxHead, mlp
from .objective import ff_loss, mean_of_squares, min_sum_of_squares, p_positive, sum_of_squares

__all__ = [
    "__version__", "FFLabError", "ConfigError", "DataError", "CheckpointError", "TrainingDiverged",
    "ff_loss", "sum_of_squares", "min_sum_of_squares", "mean_of_squares", "p_positive",
    "FFLayer", "FFDense", "normalize", "FFNet", "SoftmaxHead", "mlp", "CNN",
    "overlay_label", "uniform_wrong_labels", "hard_wrong_labels",
    "FFLocal", "hybrid_negatives", "make_masks", "fast_update",
    "fit", "evaluate_run", "get_recipe",
]


def __getattr__(name: str):
    # The training entry points pull in every kind of run: imported on first use only, so that
    # ``import fflab`` stays light.
    if name in ("fit", "evaluate_run", "get_recipe"):
        from . import recipes, train
        return {"fit": train.fit, "evaluate_run": train.evaluate_run, "get_recipe": recipes.get_recipe}[name]
    raise AttributeError(f"module 'fflab' has no attribute {name!r}")
