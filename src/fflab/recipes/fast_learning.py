"""Learning fast: one online step that gives every layer an exact goodness (paper section 8)."""
from __future__ import annotations

from ..experiments.fast_learning import FastLearningConfig
from ._recipe import Recipe, quick_mode


def fast_learning(quick: bool):
    """A fresh 3x500 FF stack learns 10 MNIST images one at a time, one exact step each, with target
    goodness S* = each layer's threshold; ``own_step_dev`` (|G - S*| / S* right after a case's own
    step) is the claim, ``seen_dev_after`` and ``unseen_shift`` show what later steps disturb.

    Command: ``fflab train fast-learning``. Runtime: seconds (no training loop).
    """
    cfg = FastLearningConfig(hidden=(500, 500, 500))
    return quick_mode(cfg, hidden=(32, 32)) if quick else cfg


RECIPES = (
    Recipe("fast-learning", "paper: one step with eps = sqrt(S*/S_L) - 1 gives every layer goodness "
           "exactly S* for the case (online, all layers at once)", "8", fast_learning),
)
