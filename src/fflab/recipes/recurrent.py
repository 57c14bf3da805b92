"""Recurrent FF with top-down effects (paper section 4)."""
from __future__ import annotations

from ..experiments.recurrent import RecurrentFFConfig
from ._recipe import Recipe, quick_mode


def _recurrent(goodness: str, quick: bool) -> RecurrentFFConfig:
    cfg = RecurrentFFConfig(hidden=(2000, 2000), iterations=8, damping=0.3, eval_window=(3, 5), epochs=60,
                            batch_size=100, goodness=goodness, negatives="hard", optimizer="adam", lr=2.5e-4,
                            head_lr=1e-3, lr_schedule="linear_half", eval_every=5, dtype="auto")
    return quick_mode(cfg, hidden=(64, 64)) if quick else cfg


def ff_recurrent(quick: bool):
    """Image, 2 hidden layers of 2000 ReLUs, one-of-10 label layer on top; a bottom-up pass, then 8
    synchronous iterations damped 0.3 old / 0.7 new; FF loss at every layer and iteration; hard
    negatives from the bottom-up pass's softmax. Test: per label, goodness averaged over
    iterations 3-5.

    Paper: 1.31%. Command: ``fflab train ff-recurrent``. Runtime: about 2 hours on 2 cores of an AMD
    EPYC Zen 4 in bf16. DEVIATION: Adam, lr 2.5e-4 (the paper gives no optimizer;
    docs/recurrent-lr-study.md); bf16 products where the CPU has them (``dtype=auto``).
    """
    return _recurrent("ssq", quick)


def ff_recurrent_minssq(quick: bool):
    """``ff-recurrent`` with the sign of goodness reversed ("min ssq"): positive data should have
    LOW activity, so the top-down input learns to cancel the bottom-up input, as in predictive coding.

    Paper: no MNIST number. Command: ``fflab train ff-recurrent-minssq``. Runtime: as ff-recurrent.
    DEVIATION: as ff-recurrent.
    """
    return _recurrent("min_ssq", quick)


RECIPES = (
    Recipe("ff-recurrent", "paper: recurrent top-down FF net on MNIST, 60 epochs, 1.31% test error", "4",
           ff_recurrent),
    Recipe("ff-recurrent-minssq", "paper: with min ssq the recurrent net works too (predictive coding); "
           "no MNIST number given", "4", ff_recurrent_minssq),
)
