"""Datasets as the training loop takes them: checked, images flattened, with their ``DataShape``.

``prepare`` accepts what a loader returns or what a user holds: a dict with ``x_train``,
``y_train``, ``x_test``, ``y_test`` (or a 4-tuple in that order) of tensors or numpy arrays.
Images are float in [0, 1] (or uint8, divided by 255), shaped (N, C, H, W), (N, H, W) or
(N, D); labels are integers 0..K-1. Every problem is a ``DataError`` naming the array.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .errors import DataError
from .task import MNIST_SHAPE, DataShape

KEYS = ("x_train", "y_train", "x_test", "y_test")


def _tensor(name: str, a: Any) -> torch.Tensor:
    if torch.is_tensor(a):
        return a
    try:
        import numpy as np
        if isinstance(a, np.ndarray):
            return torch.from_numpy(a)
    except ImportError:   # pragma: no cover - numpy is a dependency
        pass
    raise DataError(f"{name} is a {type(a).__name__}; give a torch tensor or a numpy array")


def _image_shape(name: str, x: torch.Tensor) -> tuple[int, int, int]:
    if x.dim() == 4:
        return tuple(int(s) for s in x.shape[1:])          # (C, H, W)
    if x.dim() == 3:
        return (1, int(x.shape[1]), int(x.shape[2]))
    if x.dim() == 2:
        d = int(x.shape[1])
        side = math.isqrt(d)
        if side * side == d:
            return (1, side, side)
        side = math.isqrt(d // 3)
        if 3 * side * side == d:
            return (3, side, side)                          # flattened RGB, channels first
        return (1, 1, d)
    raise DataError(f"{name} has shape {tuple(x.shape)}: give images as (N, C, H, W), (N, H, W) or (N, D)")


def _images(name: str, x: torch.Tensor) -> torch.Tensor:
    if x.dtype == torch.uint8:
        x = x.float().div_(255.0)
    elif not x.is_floating_point():
        raise DataError(f"{name} has dtype {x.dtype}: give float images in [0, 1] or uint8 images")
    x = x.float()
    if x.numel() and not torch.isfinite(x).all():
        raise DataError(f"{name} holds NaN or infinite values")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise DataError(f"{name} has values in [{x.min().item():g}, {x.max().item():g}]: scale the "
                        f"images to [0, 1] (e.g. divide uint8 pixels by 255)")
    return x.reshape(x.shape[0], -1)


def _labels(name: str, y: torch.Tensor, n: int) -> torch.Tensor:
    if y.dtype.is_floating_point or y.dtype == torch.bool or y.is_complex():
        raise DataError(f"{name} has dtype {y.dtype}: give integer class labels 0..K-1")
    if y.dim() != 1 or y.shape[0] != n:
        raise DataError(f"{name} has shape {tuple(y.shape)}; expected ({n},), one label per image")
    if n and y.min() < 0:
        raise DataError(f"{name} holds the label {y.min().item()}: labels are 0..K-1")
    return y.long()


def prepare(data: Mapping[str, Any] | Sequence[Any], *, num_classes: int | None = None
            ) -> tuple[dict[str, torch.Tensor], DataShape]:
    """The four arrays of ``data`` checked and as the loop takes them (images (N, C*H*W) float32,
    labels int64), and their ``DataShape``. The class count is ``num_classes`` or, if None, one
    more than the largest label."""
    if isinstance(data, Mapping):
        missing = [k for k in KEYS if k not in data]
        if missing:
            raise DataError(f"data lacks {', '.join(missing)}; give {', '.join(KEYS)}")
        arrays = {k: _tensor(k, data[k]) for k in KEYS}
    else:
        if len(data) != 4:
            raise DataError(f"data has {len(data)} arrays; give 4: {', '.join(KEYS)}")
        arrays = {k: _tensor(k, a) for k, a in zip(KEYS, data)}
    shapes = {k: _image_shape(k, arrays[k]) for k in ("x_train", "x_test")}
    if shapes["x_train"] != shapes["x_test"]:
        raise DataError(f"x_train images are {shapes['x_train']} but x_test images are {shapes['x_test']} "
                        "(C, H, W): both splits need the same image size")
    out = {}
    for split in ("train", "test"):
        x = _images(f"x_{split}", arrays[f"x_{split}"])
        if x.shape[0] == 0:
            raise DataError(f"x_{split} holds no images")
        out[f"x_{split}"] = x
        out[f"y_{split}"] = _labels(f"y_{split}", arrays[f"y_{split}"], x.shape[0])
    seen = int(max(out["y_train"].max(), out["y_test"].max())) + 1
    if num_classes is None:
        num_classes = seen
    elif seen > num_classes:
        raise DataError(f"labels go up to {seen - 1}, beyond num_classes={num_classes}")
    if num_classes < 2:
        raise DataError(f"the labels hold {num_classes} class; classification needs at least 2")
    return out, DataShape(shapes["x_train"], num_classes)


def shape_record(shape: DataShape) -> dict[str, Any]:
    """``data.json`` of a run folder: what the model was built for."""
    return {"image_shape": list(shape.image_shape), "num_classes": shape.num_classes}


def shape_from_record(record: Mapping[str, Any] | None) -> DataShape:
    """The ``DataShape`` a run folder's ``data.json`` records (MNIST's for runs without one)."""
    if not record:
        return MNIST_SHAPE
    try:
        c, h, w = (int(v) for v in record["image_shape"])
        return DataShape((c, h, w), int(record["num_classes"]))
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"data.json does not describe the data ({e!r}): {dict(record)}") from None
