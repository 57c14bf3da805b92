"""Negative data for supervised FF: label overlay, wrong labels and hard negatives (paper section 3.3).

Every sampling function takes a ``torch.Generator`` so runs are reproducible.
"""
from __future__ import annotations

import torch

NEUTRAL_LABEL = 0.1  # ten entries of 0.1: the one-pass test input (paper section 3.3)


def overlay_label(x: torch.Tensor, labels: torch.Tensor | None, num_classes: int = 10) -> torch.Tensor:
    """Replace the first ``num_classes`` pixels of ``x`` (B, D) by a one-hot label.

    ``labels`` is (B,) int for one-hot, or None for the neutral label (all entries 0.1).
    Returns a new tensor; the input is not modified.
    """
    out = x.clone()
    if labels is None:
        out[:, :num_classes] = NEUTRAL_LABEL
    else:
        out[:, :num_classes] = torch.nn.functional.one_hot(labels, num_classes).to(x.dtype)
    return out


def uniform_wrong_labels(y: torch.Tensor, num_classes: int = 10, *,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """A label drawn uniformly from the num_classes - 1 wrong ones, for each true label in y (B,)."""
    offset = torch.randint(1, num_classes, y.shape, generator=generator, device=y.device)
    return (y + offset) % num_classes


def hard_wrong_labels(probs: torch.Tensor, y: torch.Tensor, *,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Wrong labels sampled in proportion to the model's own predicted probabilities (B, C).

    The true label's probability is zeroed first, so it is never drawn. Rows whose wrong-label
    mass is zero fall back to uniform over the wrong labels.
    """
    # A tiny floor on every entry makes an all-zero row (a perfectly confident model) uniform over
    # the wrong labels without a data-dependent branch (which would force a host-device sync).
    p = torch.nan_to_num(probs.detach().float(), nan=0.0, posinf=0.0, neginf=0.0).clamp_min(0.0) + 1e-12
    p.scatter_(1, y[:, None], 0.0)
    # torch.multinomial(p, 1) draws argmax(p / q) with q ~ Exp(1) (the Gumbel-max trick), but
    # first checks p with two host reads (``.item()``): a host-device sync on a GPU, and extra
    # passes and reductions on a CPU. p is valid by construction, so draw the same way without
    # them: on CPU the same labels from the same generator state (tests/test_negatives.py).
    # The clamp keeps the true label (p = 0) from winning 0 / 0 if q ever comes out exactly 0
    # (torch's own CPU kernel leaves that risk in).
    q = torch.empty_like(p).exponential_(generator=generator).clamp_min_(torch.finfo(p.dtype).tiny)
    return p.div_(q).argmax(1)
