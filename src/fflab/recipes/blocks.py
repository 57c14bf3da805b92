"""Block goodness: each block of units decides positive vs negative on its own (paper section 7)."""
from __future__ import annotations

from ..experiments.supervised import SupervisedFFConfig
from ._recipe import Recipe, quick_mode


def _blocks(block_size: int, quick: bool) -> SupervisedFFConfig:
    cfg = SupervisedFFConfig(hidden=(400, 400, 400), epochs=10, batch_size=100, optimizer="adam", lr=1e-3,
                             head_lr=1e-3, negatives="hard", eval_every=2, block_size=block_size)
    return quick_mode(cfg, hidden=(40, 40)) if quick else cfg


def ff_blocks(quick: bool):
    """Supervised FF on MNIST, each 400-unit layer as 20 blocks of 20 units with their own goodness,
    threshold and positive/negative decision; compare with ``ff-blocks-baseline``.

    Paper: no number. Command: ``fflab train ff-blocks``. Runtime: about 3 minutes on 2 CPU cores.
    """
    return _blocks(20, quick)


def ff_blocks_baseline(quick: bool):
    """``ff-blocks`` with one goodness per layer (``block_size=0``).

    Command: ``fflab train ff-blocks-baseline``. Runtime: about 3 minutes on 2 CPU cores.
    """
    return _blocks(0, quick)


RECIPES = (
    Recipe("ff-blocks", "paper: per-block goodness adds constraint linearly in the number of blocks; "
           "compare with ff-blocks-baseline", "7", ff_blocks),
    Recipe("ff-blocks-baseline", "whole-layer goodness on the ff-blocks net (the comparison)", "7",
           ff_blocks_baseline),
)
