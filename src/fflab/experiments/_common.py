"""Pieces several kinds of run share: data augmentation, layer-index checks, goodness samples."""
from __future__ import annotations

import torch

from .. import runs
from ..errors import ConfigError
from ..nets import FFNet


def jitter(x: torch.Tensor, max_shift: int, *, generator: torch.Generator) -> torch.Tensor:
    """Random shifts of up to ``max_shift`` pixels each way (paper section 3.3)."""
    from ..data.augment import jitter as _jitter  # only jittered runs need it
    return _jitter(x, max_shift, generator=generator)


def check_eval_from_layer(eval_from_layer: int, depth: int) -> None:
    if not 0 <= eval_from_layer < depth:
        raise ConfigError(f"eval_from_layer={eval_from_layer} must be < number of hidden layers {depth}")


@torch.no_grad()
def write_goodness(run: runs.Run, net: FFNet, hs_pos: list[torch.Tensor], hs_neg: list[torch.Tensor]) -> None:
    """goodness.safetensors (pos.{i}, neg.{i}, threshold.{i} per layer), read by ``fflab plot``."""
    from safetensors.torch import save_file
    tensors = {}
    for i, layer in enumerate(net.layers):
        tensors[f"pos.{i}"] = layer.goodness(hs_pos[i]).cpu().contiguous()
        tensors[f"neg.{i}"] = layer.goodness(hs_neg[i]).cpu().contiguous()
        tensors[f"threshold.{i}"] = torch.tensor([layer.threshold])
    runs.atomic_write(run.path / "goodness.safetensors", lambda tmp: save_file(tensors, tmp))
