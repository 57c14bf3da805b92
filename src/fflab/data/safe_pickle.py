"""Unpickling that runs no code: the CIFAR-10 python batches are pickles, and a pickle from an
untrusted file could call any function. Only the names the official files need are allowed: plain
containers and numpy's uint8 array reconstruction; anything else is refused before it is looked up."""
from __future__ import annotations

import io
import pickle

import numpy as np

from ..errors import DataError


class _Refused(Exception):
    pass


def _np_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def _safe_reconstruct(subtype, shape, dtype_code):
    if subtype is not np.ndarray:
        raise _Refused(f"an array of type {subtype!r}")
    return _np_reconstruct()(np.ndarray, shape, dtype_code)


def _safe_dtype(spec, align=False, copy=True):
    if spec not in ("u1", b"u1"):
        raise _Refused(f"numpy dtype {spec!r} (a CIFAR-10 batch holds uint8 pixels only)")
    return np.dtype("u1")


# (module, name) -> the object it may stand for. The official batches name the first three; a batch
# re-pickled by numpy >= 2 names numpy._core instead of numpy.core.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _safe_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _safe_reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _safe_dtype,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Builds dicts, lists, tuples, bytes, str, ints, floats, None and bools from the opcodes alone;
    of the globals only those in ``_ALLOWED``, and never by importing what the stream names."""

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise _Refused(f"global {module}.{name}") from None

    def persistent_load(self, pid):
        raise _Refused("a persistent id")


def safe_unpickle(data: bytes, *, name: str) -> object:
    """The object pickled in ``data`` (Python 2 strings become bytes), built without running any code
    the pickle asks for. Raises DataError naming ``name`` on a refused global or a malformed stream."""
    f = io.BytesIO(data)
    try:
        obj = _RestrictedUnpickler(f, encoding="bytes").load()
    except _Refused as e:
        raise DataError(f"{name}: refusing to unpickle {e}: a CIFAR-10 python batch holds only a dict "
                        f"of bytes, lists, ints and one uint8 numpy array; this file is not one "
                        f"(and may be hostile)") from None
    except Exception as e:  # a malformed pickle raises almost anything (UnpicklingError, ValueError, ...)
        raise DataError(f"{name}: not a readable pickle ({type(e).__name__}: {e}); the file is "
                        f"{len(data)} bytes, truncated or corrupt") from None
    if f.tell() != len(data):
        raise DataError(f"{name}: {len(data) - f.tell()} bytes of garbage after the pickle")
    return obj


