"""Unsupervised FF with hybrid-image negatives and a linear readout (paper section 3.2)."""
from __future__ import annotations

from ..experiments.unsupervised import UnsupervisedFFConfig
from ._recipe import Recipe, quick_mode

# Quick modes keep four hidden layers so the paper's readout layers (1, 2, 3) stay valid.
_QUICK_LOCAL = dict(units_per_location=(2, 2, 2, 2), patch=(5, 3, 3, 3), stride=(2, 1, 1, 1),
                    padding=(2, 1, 1, 1))


def ff_unsup_dense(quick: bool):
    """784-2000-2000-2000-2000, no labels, hybrid negatives (masks blurred 6 times); a linear
    softmax readout of hidden layers 2-4 trained alongside (and one of all layers, to compare).

    Paper: 1.37%. Command: ``fflab train ff-unsup-4x2000``; ``fflab readout RUN`` refits the readout
    on frozen features. Runtime: about 1 hour for 60 epochs on 2 cores of an AMD EPYC Zen 4 in bf16.
    DEVIATION: Adam, lr 1e-4 for the FF layers (at 1e-3 most upper-layer units die), 60 epochs
    (the paper gives neither); bf16 products where the CPU has them (``dtype=auto``).
    """
    cfg = UnsupervisedFFConfig(architecture="dense", hidden=(2000,) * 4, epochs=60, batch_size=100,
                               optimizer="adam", lr=1e-4, head_lr=1e-3, lr_schedule="linear_half",
                               blur_passes=6, readout_layers=(1, 2, 3), eval_every=5, dtype="auto")
    return quick_mode(cfg, hidden=(32, 32, 32, 32)) if quick else cfg


def ff_unsup_local(quick: bool):
    """``ff-unsup-4x2000`` with four locally connected layers (no weight sharing) and peer
    normalization 0.03: 11x11 fields, stride 2, on the image, then 5x5 fields on 10x14x14 maps
    (1960 units a layer, ``fflab.local.MNIST_LOCAL_LAYERS``), 60 epochs.

    Paper: 1.16%. Command: ``fflab train ff-unsup-local``. Runtime: about 1.5 hours on 2 CPU cores
    in bf16. DEVIATION: the MNIST geometry, optimizer and lr (Adam, 1e-3) are ours.
    """
    cfg = UnsupervisedFFConfig(architecture="local", epochs=60, batch_size=100, optimizer="adam", lr=1e-3,
                               head_lr=1e-3, lr_schedule="linear_half", peer_norm=0.03, blur_passes=6,
                               readout_layers=(1, 2, 3), eval_every=5, dtype="auto")
    return quick_mode(cfg, **_QUICK_LOCAL) if quick else cfg


RECIPES = (
    Recipe("ff-unsup-4x2000", "paper: unsupervised FF, 4x2000 ReLU, hybrid negatives, linear readout "
           "of the last 3 hidden layers, 1.37% test error", "3.2", ff_unsup_dense),
    Recipe("ff-unsup-local", "paper: unsupervised FF with local receptive fields and peer normalization, "
           "60 epochs, 1.16% test error", "3.2", ff_unsup_local),
)
