"""The runtime of a run: device, dtype and threads, resolved once and handed to the builders.

``resolve(cfg)`` turns the config's runtime keys (``device``, ``dtype``, ``threads``) into a
``Runtime``: ``device=auto`` becomes cuda or cpu, ``dtype=auto`` becomes bfloat16 where the device
multiplies bf16 natively (a CPU with AVX-512 BF16 or AMX, a bf16 GPU) and float32 elsewhere, where
bf16 products run many times slower than fp32 (BENCHMARKS.md). Everything downstream reads the
``Runtime``, never the config's runtime keys.

``flush_denormals()`` runs a block with the CPU's flush-to-zero and denormals-are-zero modes on.
fp32 training produces denormal numbers (below 1.2e-38): in the demo on MNIST, a tenth of
Adam's first-moment estimates (``exp_avg``) of the FF layers and of the head are denormal after
a few epochs, and growing (the averages of gradients that have become tiny or zero, decaying by
beta1 = 0.9 a step), with a few in the gradients and second moments
(``benchmarks/denormals.py``). On some x86 CPUs every operation that meets one takes a slow
path, so fp32 epochs slow down as training goes on (BENCHMARKS.md). Flushing them to zero
changes the numbers far below anything a float32 sum can resolve: the demo's losses and errors
come out the same to the printed digit.
"""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from .distributed import SINGLE, Parallel, from_environment
from .errors import ConfigError, SlowDtypeWarning

DTYPES = ("float32", "bfloat16", "auto")


def denormals_flushed() -> bool:
    """Whether this thread flushes denormal fp32 numbers to zero now (torch has no getter: a
    denormal made by a multiplication comes out as 0 when the mode is on)."""
    return torch.tensor([1e-30], dtype=torch.float32).mul(1e-10).item() == 0.0


@contextlib.contextmanager
def flush_denormals(enabled: bool = True) -> Iterator[bool]:
    """Within the block, CPU arithmetic flushes denormal numbers to zero (``enabled``); yields
    whether the CPU supports it. The caller's mode is restored after. Threads that torch started
    before the block keep their own mode, so fflab turns it on before the first large operation
    of a run."""
    before = denormals_flushed()
    supported = torch.set_flush_denormal(enabled)
    try:
        yield supported and enabled
    finally:
        torch.set_flush_denormal(before)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if available else cpu; otherwise the named device, checked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device={name!r}: choose auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but CUDA is not available (use device=cpu or auto)")
    return dev


def concrete_dtype(dtype: str, device: torch.device) -> str:
    """``dtype`` as a run uses it on ``device``: ``auto`` is bfloat16 where the device multiplies
    bf16 natively and float32 elsewhere."""
    if dtype not in DTYPES:
        raise ConfigError(f"dtype={dtype!r}: choose {', '.join(DTYPES)}")
    if dtype != "auto":
        return dtype
    from ._engines import products
    return "bfloat16" if products.native_bf16(device) else "float32"


def warn_if_slow_dtype(dtype: str, device: torch.device) -> None:
    """bf16 on a CPU without native bf16 products (AVX2 only, e.g. AMD Zen 3) runs every product
    through a slow fallback: say so before a run crawls."""
    from ._engines import products
    if dtype == "bfloat16" and device.type == "cpu" and not products.NATIVE_BF16:
        warnings.warn("dtype=bfloat16 on a CPU without native bf16 products (no AVX-512 BF16 or "
                      "AMX): every product runs in a slow fallback, far slower than float32. "
                      "Use dtype=float32 or dtype=auto here.", SlowDtypeWarning, stacklevel=3)


@dataclass(frozen=True)
class Runtime:
    """Where and in what precision a run's arithmetic happens."""
    device: torch.device
    dtype: str = "float32"     # float32 | bfloat16: the products' dtype (master weights stay fp32)
    threads: int = 0           # torch CPU threads set for the run (0: torch's default)
    steps: int | None = None   # training steps of the whole run, where known (compile=auto reads it)
    parallel: Parallel = SINGLE   # this process's place in a torchrun job (fflab.distributed)

    @property
    def product_dtype(self) -> torch.dtype | None:
        """The engines' product dtype: bf16, or None for the weights' own (fp32)."""
        return torch.bfloat16 if self.dtype == "bfloat16" else None

    def autocast(self):
        """bf16 autocast for the forward products (master weights and optimizer stay fp32)."""
        if self.dtype == "bfloat16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


def resolve(cfg: Any, *, device: str | torch.device | None = None, set_threads: bool = True) -> Runtime:
    """The ``Runtime`` of ``cfg`` (``device`` overrides the config's, e.g. to evaluate a GPU run
    on a CPU). Sets torch's thread count when the config asks for one."""
    dev = device if isinstance(device, torch.device) else resolve_device(device or cfg.device)
    dtype = concrete_dtype(cfg.dtype, dev)
    warn_if_slow_dtype(dtype, dev)
    if set_threads and cfg.threads:
        torch.set_num_threads(cfg.threads)
    return Runtime(dev, dtype, cfg.threads, parallel=from_environment(dev, getattr(cfg, "parallel", "auto")))


def as_runtime(rt: Runtime | torch.device | str) -> Runtime:
    """A ``Runtime`` from a device (fp32), for callers that only have a device."""
    if isinstance(rt, Runtime):
        return rt
    return Runtime(rt if isinstance(rt, torch.device) else resolve_device(rt))
