"""Every kind of run fflab trains, and every dataset it reads: two explicit tables.

``KINDS`` maps a config class name (the ``kind`` in a run folder's config.json) to its config
class and to what runs it: ``build(cfg, runtime) -> Task`` for the kinds that train through
``fflab.train.fit``'s loop, or ``run(cfg, runtime, splits, folder)`` for a kind with no training
loop (fast learning). ``DATASETS`` maps a ``dataset=`` name to a loader returning the four
tensors ``x_train, y_train, x_test, y_test``. Nothing is registered by importing a module: this
file imports what it lists.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import config as config_mod
from .. import inputs, runs
from ..errors import CheckpointError, ConfigError
from ..task import DataShape
from . import backprop, fast_learning, local_recurrent, recurrent, sequences, supervised, unsupervised

__all__ = ["Kind", "KINDS", "DATASETS", "kind_of", "config_from_dict", "read_config", "load_dataset",
           "load_data"]


@dataclass(frozen=True)
class Kind:
    """A kind of run: its config class and either ``build`` (a Task for the loop) or ``run``;
    ``images``: whether it reads labelled images (checked and shaped by ``fflab.inputs``)."""
    config: type
    build: Callable[..., Any] | None = None
    run: Callable[..., dict[str, float]] | None = None
    images: bool = True
    # Under torchrun (fflab.distributed): ``own_shard``, the step takes the whole global batch and
    # trains on this rank's share itself, drawing its randomness for the whole batch as one
    # process would; other kinds get their share from the loop and their gradients averaged
    # before each optimizer step. ``pipeline``: it can also train with parallel=pipeline.
    own_shard: bool = False
    pipeline: bool = False


KINDS: dict[str, Kind] = {k.config.__name__: k for k in (
    Kind(supervised.SupervisedFFConfig, build=supervised.build, own_shard=True, pipeline=True),   # paper section 3.3
    Kind(backprop.BPConfig, build=backprop.build),                      # section 3.1
    Kind(unsupervised.UnsupervisedFFConfig, build=unsupervised.build),  # section 3.2
    Kind(recurrent.RecurrentFFConfig, build=recurrent.build),           # section 4
    Kind(local_recurrent.LocalRecurrentFFConfig, build=local_recurrent.build),   # CIFAR-10, Table 1
    Kind(local_recurrent.LocalBPConfig, build=local_recurrent.build_bp),         # CIFAR-10, Table 1
    Kind(sequences.SequenceFFConfig, build=sequences.build_ff, images=False),   # section 7
    Kind(sequences.SequenceBPConfig, build=sequences.build_bp, images=False),   # section 7
    Kind(fast_learning.FastLearningConfig, run=fast_learning.run),      # section 8
)}


def _mnist(cfg: Any, data_dir: str | None) -> dict[str, torch.Tensor]:
    from .. import data
    return data.load_mnist(cfg.dataset, data_dir=data_dir)


def _cifar10(cfg: Any, data_dir: str | None) -> dict[str, torch.Tensor]:
    from ..data.cifar import load_cifar10
    return load_cifar10(data_dir=data_dir)


def _folder(cfg: Any, data_dir: str | None) -> dict[str, torch.Tensor]:
    from ..data.folder import load_image_folder
    return load_image_folder(cfg.dataset[len(FOLDER):])[0]


# dataset=folder:PATH reads PATH/train/<class>/* and PATH/test/<class>/* (fflab.data.folder).
FOLDER = "folder:"

DATASETS: dict[str, Callable[[Any, str | None], dict[str, torch.Tensor]]] = {
    "mnist": _mnist,
    "fashion_mnist": _mnist,
    "cifar10": _cifar10,
    "aesop": sequences.load_aesop_split,
}


def kind_of(cfg: Any) -> Kind:
    try:
        return KINDS[type(cfg).__name__]
    except KeyError:
        raise ConfigError(f"no trainer for config kind {type(cfg).__name__}") from None


def load_dataset(cfg: Any, data_dir: str | None = None) -> dict[str, torch.Tensor]:
    """The four tensors of ``cfg.dataset`` (on the CPU): a name in ``DATASETS``, or
    ``folder:PATH`` for an image folder."""
    if cfg.dataset.startswith(FOLDER):
        return _folder(cfg, data_dir)
    if cfg.dataset not in DATASETS:
        raise ConfigError(f"dataset={cfg.dataset!r}: choose one of {sorted(DATASETS)} or folder:PATH "
                          f"(PATH/train/<class>/*, PATH/test/<class>/*)")
    return DATASETS[cfg.dataset](cfg, data_dir)


def config_from_dict(d: dict[str, Any], *, note: Callable[[str], None] | None = None) -> Any:
    """The config a run folder's config.json holds (``config.from_dict`` with ``KINDS``)."""
    d = dict(d)
    cls = KINDS[d["kind"]].config if d.get("kind") in KINDS else None
    for key in getattr(cls, "DROPPED_KEYS", ()):
        if key in d:
            d.pop(key)
            if note is not None:
                note(f"config key {key!r} no longer applies to {cls.__name__}; ignored")
    return config_mod.from_dict(d, {name: k.config for name, k in KINDS.items()}, note=note)


def read_config(run_dir: str | Path, *, note: Callable[[str], None] | None = None) -> tuple[Any, str | None]:
    """A run folder's config and recipe name."""
    p = Path(run_dir) / "config.json"
    if not p.exists():
        raise CheckpointError(f"{run_dir} is not a run folder (no config.json)")
    d = runs.read_json(p)
    if not isinstance(d, dict):
        raise CheckpointError(f"{p} is not a config (not a JSON object)")
    recipe = d.pop("recipe", None)
    return config_from_dict(d, note=note), recipe


def load_data(cfg: Any, device: torch.device, data_dir: str | None = None, *,
              data: Mapping[str, Any] | Sequence[Any] | None = None,
              ) -> tuple[dict[str, torch.Tensor], DataShape | None]:
    """The whole dataset as tensors on ``device`` (MNIST is 190 MB as float32: batches are index
    draws), from ``data`` (arrays the caller holds) or else ``cfg.dataset``, and its
    ``DataShape`` (None for kinds that read no images)."""
    kind = kind_of(cfg)
    d = load_dataset(cfg, data_dir) if data is None else data
    shape = None
    if kind.images:
        d, shape = inputs.prepare(d)
    elif data is not None:
        d = dict(zip(inputs.KEYS, data)) if not isinstance(data, Mapping) else dict(data)
    if cfg.train_subset:
        d["x_train"], d["y_train"] = d["x_train"][: cfg.train_subset], d["y_train"][: cfg.train_subset]
    if cfg.test_subset:
        d["x_test"], d["y_test"] = d["x_test"][: cfg.test_subset], d["y_test"][: cfg.test_subset]
    return {k: v.to(device) for k, v in d.items()}, shape
