"""``torch.compile`` for the engines, with the check that inductor can build CPU kernels here."""
from __future__ import annotations

import shutil
from collections.abc import Callable

import torch

from ..errors import ConfigError


def has_cxx_compiler() -> bool:
    """True when a C++ compiler is on the PATH: inductor writes C++ for CPU kernels."""
    return any(shutil.which(c) for c in ("g++", "c++", "clang++"))


def compile_static(fn: Callable, device: torch.device) -> Callable:
    """``torch.compile(fn)`` with static shapes, after checking that inductor can build it."""
    # Inductor writes C++ for CPU kernels: without a compiler the first training step would fail
    # deep inside torch, so say so now.
    if device.type == "cpu" and not has_cxx_compiler():
        raise ConfigError("compile=true needs a C++ compiler (g++ or clang++) on the PATH for "
                          "torch.compile on CPU; install one or set compile=false")
    return torch.compile(fn, dynamic=False)
