"""The user cache of decoded datasets: where it lives, and atomic writes and guarded reads of it.

Serves the paper's MNIST experiments (sections 3 and 4): a run loads its data from here in a
fraction of a second instead of decompressing IDX files. A cache entry is one uncompressed ``.npz`` of
uint8 arrays plus a JSON ``meta`` entry (where the data came from, the MD5 of each array's IDX form).
This module only stores and reads; whether the content is right is checked by ``fflab.data.mnist``.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np

from ..errors import DataError
from .sources import SourceUnavailable

CACHE_FORMAT = 1


def cache_dir() -> Path:
    """``$FFLAB_CACHE_DIR``, else ``$XDG_CACHE_HOME/fflab``, else ``~/.cache/fflab``."""
    if override := os.environ.get("FFLAB_CACHE_DIR"):
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    # The XDG spec says a relative path in XDG_CACHE_HOME is invalid and must be ignored.
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "fflab"


def save_arrays(path: str | Path, arrays: dict[str, np.ndarray], meta: dict) -> Path:
    """Write ``arrays`` and ``meta`` to ``path`` atomically (temp file in the same folder + os.replace).

    A crash or a concurrent reader never sees a half-written cache: the old file (or none) stays until
    the new one is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if "meta" in arrays:
        raise ValueError("'meta' is reserved for the metadata entry")
    meta = dict(meta, cache_format=CACHE_FORMAT)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            # Uncompressed: loading MNIST from it takes ~50 ms; compressed would take ~1 s.
            np.savez(f, meta=np.array(json.dumps(meta)), **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_arrays(path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """Read a cache entry. Missing -> SourceUnavailable; unreadable or wrong format -> DataError."""
    path = Path(path)
    if not path.is_file():
        raise SourceUnavailable(f"{path.name} not built yet")
    try:
        # Our own file handle: np.load leaks its handle when the zip is corrupt (ResourceWarning).
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
            if "meta" not in z.files:
                raise DataError(f"{path}: no 'meta' entry; not an fflab cache file")
            meta = json.loads(str(z["meta"][()]))
            arrays = {k: z[k] for k in z.files if k != "meta"}
    except DataError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: unreadable cache ({type(e).__name__}: {e})") from None
    if not isinstance(meta, dict) or meta.get("cache_format") != CACHE_FORMAT:
        raise DataError(f"{path}: cache format {meta.get('cache_format') if isinstance(meta, dict) else '?'}"
                        f", expected {CACHE_FORMAT}")
    return arrays, meta


def array_sha256(arr: np.ndarray) -> str:
    """SHA-256 of an array's bytes (C order): what a cache entry records to be checked on load."""
    return hashlib.sha256(np.ascontiguousarray(arr)).hexdigest()


def write_cache(path: Path, arrays: dict[str, np.ndarray], meta: dict, *, stacklevel: int = 2) -> Path | None:
    """``save_arrays``, or None with a warning when the cache cannot be written: the data is fine,
    only the next run will be slower, so the run goes on."""
    try:
        return save_arrays(path, arrays, meta)
    except OSError as e:
        warnings.warn(f"fflab: could not write the data cache {path} ({e}); set FFLAB_CACHE_DIR to a "
                      f"writable folder", RuntimeWarning, stacklevel=stacklevel + 1)
        return None

