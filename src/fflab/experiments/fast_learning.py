"""Learning fast and slow (paper section 8): one online step per case that gives every layer an
exact goodness, on MNIST images. No training loop: ``run`` learns a few cases one at a time
(``fflab.fast.online_fast_learning_demo``) on a copy of a freshly initialized FF stack, for the
test split and for training images, and reports how exact each step is and how far the cases it
never saw moved.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from .. import runs
from ..config import CommonConfig
from ..errors import ConfigError
from ..fast import online_fast_learning_demo
from ..nets import FFNet
from ..runtime import Runtime
from ..task import MNIST_SHAPE, DataShape


@dataclass(frozen=True)
class FastLearningConfig(CommonConfig):
    """Online one-case learning (paper section 8) on MNIST images. Run keys other than
    ``dataset``, ``seed``, ``test_subset`` and ``train_eval_size`` do not apply (no training)."""
    dataset: str = "mnist"
    epochs: int = 1
    batch_size: int = 1000
    train_eval_size: int = 1000           # training images the demo may draw from
    hidden: tuple[int, ...] = (500, 500, 500)
    num_seen: int = 10                    # cases learned one at a time, in order
    num_unseen: int = 100                 # cases never learned: how far they move
    target_goodness: float = 0.0          # S*; 0 = each layer's threshold (mean square 1 per unit)
    norm: str = "rms"                     # rms (the nets' normalization) | l2 (the paper's statement)

    # Keys of run folders written when this kind still ran through the training loop.
    DROPPED_KEYS = ("lr_schedule",)


def demo(net: FFNet, x: torch.Tensor, cfg: FastLearningConfig) -> tuple[dict[str, float], dict]:
    """Learn ``x[:num_seen]`` one case at a time with ``fflab.fast.fast_update`` on a float64 copy
    of ``net``'s layers. Returns the summary (``*_dev``: mean |G - S*| / S* over seen cases and
    layers; ``unseen_shift``: mean |G_after - G_before| / G_before over ``x[num_seen:num_seen +
    num_unseen]``) and the full record."""
    if x.shape[0] < cfg.num_seen + cfg.num_unseen:
        raise ConfigError(f"need {cfg.num_seen + cfg.num_unseen} images, the split has {x.shape[0]}")
    layers = copy.deepcopy(net.layers).double()  # float64: the step is exact up to rounding
    s_star = [cfg.target_goodness or layer.threshold for layer in layers]
    xd = x.double()
    r = online_fast_learning_demo(layers, xd[:cfg.num_seen], xd[cfg.num_seen:cfg.num_seen + cfg.num_unseen],
                                  s_star, norm=cfg.norm)
    target = torch.tensor(s_star, dtype=torch.float64, device=x.device)

    def dev(gd: torch.Tensor) -> float:
        return ((gd - target).abs() / target).mean().item()
    out = {"own_step_dev": dev(r["g_seen_own_step"]), "seen_dev_before": dev(r["g_seen_before"]),
           "seen_dev_after": dev(r["g_seen"]),
           "unseen_shift": ((r["g_unseen"] - r["g_unseen_before"]).abs() / r["g_unseen_before"]).mean().item()}
    return out, {**out, "target_goodness": s_star, **{k: v.tolist() for k, v in r.items()}}


def run(cfg: FastLearningConfig, rt: Runtime, splits: dict[str, torch.Tensor], folder: runs.Run,
        shape: DataShape = MNIST_SHAPE) -> dict[str, float]:
    """The demo on each split's images (``splits``: name -> images); writes fast_learning.json
    into the run folder and returns ``{split}_{key}`` summaries."""
    torch.manual_seed(cfg.seed)   # the stack's initial weights
    net = FFNet.dense(shape.in_features, cfg.hidden).to(rt.device)
    results, records = {}, []
    for name, x in splits.items():
        out, record = demo(net, x, cfg)
        results.update({f"{name}_{k}": v for k, v in out.items()})
        records.append({"split": name, **record})
    runs.write_json(folder.path / "fast_learning.json", {"evaluations": records})
    return results
