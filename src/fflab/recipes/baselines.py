"""Backprop baselines in the same harness (paper section 3.1)."""
from __future__ import annotations

from ..experiments.backprop import BPConfig
from ._recipe import Recipe, quick_mode


def bp_mlp(quick: bool):
    """784-1000-1000-1000-10 ReLU MLP (the official FF net's shape), Adam, cosine schedule, 20 epochs.

    Paper: about 1.4%. Command: ``fflab train bp-mlp``. Runtime: a few minutes on 2 CPU cores.
    """
    cfg = BPConfig(model="mlp", hidden=(1000,) * 3, epochs=20, batch_size=100, lr=1e-3, lr_schedule="cosine")
    return quick_mode(cfg, hidden=(64, 64)) if quick else cfg


def bp_cnn(quick: bool):
    """conv5x5(32)-pool-conv5x5(64)-pool-fc256-fc10 ReLU CNN (``fflab.nets.CNN``), dropout 0.25
    before the last layer, Adam lr 1e-3, cosine schedule, 20 epochs, no augmentation.

    Paper: about 0.6%. Command: ``fflab train bp-cnn``. Runtime: about 20 minutes on 2 CPU cores.
    """
    cfg = BPConfig(model="cnn", epochs=20, batch_size=100, optimizer="adam", lr=1e-3, lr_schedule="cosine",
                   dropout=0.25, eval_every=5)
    return quick_mode(cfg) if quick else cfg


RECIPES = (
    Recipe("bp-mlp", "paper: backprop permutation-invariant MLP, about 1.4% test error in about 20 epochs",
           "3.1", bp_mlp),
    Recipe("bp-cnn", "paper: a sensible backprop CNN gets about 0.6% test error", "3.1", bp_cnn),
)
