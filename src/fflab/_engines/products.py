"""The forward product of a dense FF layer, in the library this CPU runs it fastest with
(paper section 2: per layer, one forward product per pass and one weight-gradient product).

``linear(x, w, b, relu=True)`` = ``relu(x @ w.T + b)``, (B, in) x (out, in) -> (B, out). On CPU
it calls oneDNN's linear (``torch.ops.mkldnn._linear_pointwise``, the kernel inductor's own CPU
fusions call) with the ReLU in its epilogue, instead of ``torch.addmm`` (MKL) and a separate
pass (BENCHMARKS.md has the measured difference). bf16 products went to oneDNN through ``addmm``
already: same bits. The weight-gradient products stay ``torch.mm(dz.T, x)``: oneDNN, and MKL
with ``dz.T`` made contiguous first, were faster on cache-hot operands alone but slower inside a
sequence imitating the training step.

Elsewhere (CUDA, builds without oneDNN, ``torch.backends.mkldnn.enabled = False``, inside
``use_onednn(False)``, other dtypes, bf16 on a CPU whose oneDNN has no bf16 kernel, products
under ``MIN_ONEDNN_MACS`` multiply-adds, inputs that need gradients) it is ``torch.addmm``. Same
numbers up to float rounding (tests/test_products.py).
"""
from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Optional

import torch

# Where oneDNN's linear exists in this torch build.
ONEDNN_AVAILABLE = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
# ``use_onednn(False)`` turns it off for a block (benchmarks time ``torch.addmm`` in the same
# process); read on every call, compiled or not.
_ONEDNN_ON: contextvars.ContextVar[bool] = contextvars.ContextVar("fflab_onednn", default=True)


@contextlib.contextmanager
def use_onednn(enabled: bool) -> Iterator[None]:
    """Within the block, CPU forward products use oneDNN's linear where it fits (True, the
    default) or always ``torch.addmm`` (False)."""
    token = _ONEDNN_ON.set(bool(enabled))
    try:
        yield
    finally:
        _ONEDNN_ON.reset(token)


def onednn_active() -> bool:
    """Whether ``linear`` may call oneDNN here and now."""
    return ONEDNN_AVAILABLE and _ONEDNN_ON.get() and torch.backends.mkldnn.enabled


# oneDNN's linear has a fixed cost per call several times ``addmm``'s, whatever the size, so
# small products stay with ``addmm``; this threshold is where the two broke even on one thread
# of an AMD Zen 4 (docs/speed-notes.md).
MIN_ONEDNN_MACS = 1 << 22


# Whether this CPU runs bf16 products natively (AVX-512 BF16 or AMX: Zen 4, Sapphire Rapids).
# Without (e.g. an AVX2-only Zen 3), oneDNN refuses to build a bf16 linear at all ("could not
# create a primitive descriptor", from deep inside torch) and torch's bf16 ``mm`` runs a slow
# fallback, many times slower than fp32 (BENCHMARKS.md). Read on every call.
NATIVE_BF16 = bool(torch.backends.mkldnn.is_available()
                   and getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)())


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bf16 natively: a CPU with AVX-512 BF16 or AMX
    (``NATIVE_BF16``), or a CUDA GPU that supports bf16. ``dtype=auto`` picks bf16 there only."""
    if device.type == "cpu":
        return NATIVE_BF16
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return False


def _fits(x: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor]) -> bool:
    """A CPU product oneDNN's linear takes (fp32, or bf16 where the CPU has it natively; one
    dtype), big enough to pay for it, with no autograd graph to record (the oneDNN kernel has no
    derivative: through it, backward would silently give no gradients)."""
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or w.requires_grad
                                              or (b is not None and b.requires_grad))
    return (x.device.type == "cpu" and not needs_grad and x.dim() == 2
            and x.dtype in (torch.float32, torch.bfloat16) and w.dtype == x.dtype
            and (b is None or b.dtype == x.dtype)
            and x.shape[0] * x.shape[1] * w.shape[0] >= MIN_ONEDNN_MACS
            and (x.dtype != torch.bfloat16 or NATIVE_BF16))


def _addmm(x: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor], relu: bool) -> torch.Tensor:
    z = torch.mm(x, w.t()) if b is None else torch.addmm(b, x, w.t())
    return z.relu_() if relu else z


def _linear(x: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor], relu: bool) -> torch.Tensor:
    # read here, at run time, also inside compiled graphs (the custom op below runs it eagerly)
    if onednn_active() and _fits(x, w, b):
        return torch.ops.mkldnn._linear_pointwise(x, w, b, "relu" if relu else "none", [], "")
    return _addmm(x, w, b, relu)


def _opaque(fn):
    """``fn`` as a custom op that ``torch.compile`` calls as it is: inductor's own lowering of the
    oneDNN linear requires the weight to be a frozen constant, which a trained weight is not.
    None on torch without ``torch.library.custom_op``."""
    custom_op = getattr(torch.library, "custom_op", None)
    if custom_op is None:
        return None

    @custom_op("fflab::linear", mutates_args=())
    def opaque_linear(x: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor],
                      relu: bool) -> torch.Tensor:
        return fn(x, w, b, relu)

    @opaque_linear.register_fake
    def _(x, w, b, relu):
        return x.new_empty(x.shape[0], w.shape[0])

    return opaque_linear


_OPAQUE_LINEAR = _opaque(_linear)


def _compiling() -> bool:
    is_compiling = getattr(torch.compiler, "is_compiling", None)
    if is_compiling is None:   # torch < 2.3
        from torch import _dynamo
        is_compiling = _dynamo.is_compiling
    return bool(is_compiling())


def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, *, relu: bool = False) -> torch.Tensor:
    """``x @ w.T + b`` (then ReLU if ``relu``): (B, in), (out, in), (out,) -> (B, out).
    Differentiable: where autograd would record it, it is ``torch.addmm``."""
    if _compiling():
        # Never the oneDNN kernel itself in a graph: inductor's lowering of it fails on a weight
        # that is not a frozen constant. The custom op decides at run time (``use_onednn``); a
        # product oneDNN would not take is addmm either way.
        if _fits(x, w, b) and _OPAQUE_LINEAR is not None:
            return _OPAQUE_LINEAR(x, w, b, relu)
        return _addmm(x, w, b, relu)
    return _linear(x, w, b, relu)
