"""The IDX file format of MNIST and Fashion-MNIST: read (raw or gzipped) and write, with strict checks.

Serves the datasets of the paper's MNIST experiments (sections 3 and 4). The format: two zero
bytes, a dtype code, the number of dimensions, one big-endian uint32 per dimension, then the values in
C order, big-endian. The reader never returns an array the header does not account for exactly:
a truncated, padded or corrupt file raises DataError naming the file and what was expected vs found.
"""
from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError

# dtype code -> numpy dtype (big-endian, as IDX stores every multi-byte value).
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dt.newbyteorder("=") if dt.itemsize > 1 else dt: code for code, dt in IDX_DTYPES.items()}

# Larger than any IDX dataset we read (MNIST train images are 47 MB): a bound on what a corrupt or
# hostile .gz may expand to before we give up, so a decompression bomb cannot eat the memory.
MAX_IDX_BYTES = 1 << 30


def is_gzip(data: bytes) -> bool:
    return data[:2] == b"\x1f\x8b"


def gunzip(data: bytes, *, name: str, max_bytes: int = MAX_IDX_BYTES, expected_size: int | None = None
           ) -> bytes:
    """Decompress gzip bytes; a truncated or corrupt stream raises DataError naming ``name``.

    ``expected_size`` (the uncompressed size, where the caller knows it) only goes into the message
    about a truncated stream, so that it says expected vs found.
    """
    try:
        d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        out = d.decompress(data, max_bytes + 1)
        if len(out) > max_bytes:
            raise DataError(f"{name}: decompresses to more than {max_bytes} bytes; not an IDX file")
        if not d.eof:
            so_far = (f"{len(out)} of the expected {expected_size} bytes" if expected_size is not None
                      else f"{len(out)} bytes so far")
            raise DataError(f"{name}: gzip stream ends early (file is {len(data)} bytes, decompressed "
                            f"{so_far}): the file is truncated, download it again")
    except zlib.error as e:
        raise DataError(f"{name}: corrupt gzip data ({e}); file is {len(data)} bytes") from None
    # A second gzip member (rare, but legal) follows the first: decode it too.
    rest = d.unused_data
    if rest.strip(b"\x00"):
        if not is_gzip(rest):
            raise DataError(f"{name}: {len(rest)} bytes of garbage after the gzip stream")
        out += gunzip(rest, name=name, max_bytes=max_bytes - len(out))
    return out


def parse_idx(raw: bytes, *, name: str = "<bytes>") -> np.ndarray:
    """Parse uncompressed IDX bytes into a (read-only) array in native byte order.

    Raises DataError (naming ``name``) on a wrong magic number, an unknown dtype code, or a data size
    that does not match the dimensions in the header.
    """
    if len(raw) < 4:
        raise DataError(f"{name}: truncated header: expected at least 4 bytes, found {len(raw)} bytes")
    if raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{name}: not an IDX file (magic number 0x{raw[:4].hex()}, "
                        f"expected 0x0000TTNN: two zero bytes, type code, number of dimensions)")
    code, ndim = raw[2], raw[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise DataError(f"{name}: unknown IDX dtype code 0x{code:02X} (known: {known})")
    if ndim == 0:
        raise DataError(f"{name}: IDX header says 0 dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{name}: truncated header: expected {header} bytes for {ndim} dimensions, "
                        f"found {len(raw)} bytes in the file")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = IDX_DTYPES[code]
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "has trailing bytes"
        raise DataError(f"{name}: {what}: header says shape {dims} of {dtype.name} -> expected "
                        f"{expected} bytes, found {len(raw)} bytes")
    arr = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=False) if dtype.itemsize > 1 else arr


def read_idx_bytes(path: str | Path) -> bytes:
    """The uncompressed IDX bytes of ``path`` (gzip detected by its magic bytes, not its name)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    return gunzip(data, name=str(path)) if is_gzip(data) else data


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file, raw or gzipped, into an array of its stored dtype and shape."""
    return parse_idx(read_idx_bytes(path), name=str(path))


def idx_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    dtype = np.dtype(dtype)
    key = dtype.newbyteorder("=") if dtype.itemsize > 1 else dtype
    if key not in _CODES:
        raise ValueError(f"IDX cannot store dtype {dtype}")
    if not 1 <= len(shape) <= 255:
        raise ValueError(f"IDX needs 1 to 255 dimensions, got shape {shape}")
    return (bytes([0, 0, _CODES[key], len(shape)])
            + b"".join(int(d).to_bytes(4, "big") for d in shape))


def idx_md5(arr: np.ndarray) -> str:
    """MD5 of the uncompressed IDX file that stores ``arr``, computed without building the file.

    This is how a cached array is checked against the published MD5 of the original file.
    """
    arr = np.asarray(arr)
    h = hashlib.md5(idx_header(arr.shape, arr.dtype))
    big = arr.astype(arr.dtype.newbyteorder(">"), copy=False) if arr.dtype.itemsize > 1 else arr
    h.update(memoryview(np.ascontiguousarray(big)).cast("B"))
    return h.hexdigest()


def to_idx_bytes(arr: np.ndarray) -> bytes:
    arr = np.asarray(arr)
    big = arr.astype(arr.dtype.newbyteorder(">"), copy=False) if arr.dtype.itemsize > 1 else arr
    return idx_header(arr.shape, arr.dtype) + np.ascontiguousarray(big).tobytes()


def write_idx(path: str | Path, arr: np.ndarray) -> Path:
    """Write ``arr`` as an IDX file, gzipped when the name ends in ``.gz``. Returns the path."""
    path = Path(path)
    raw = to_idx_bytes(arr)
    if path.suffix == ".gz":
        raw = gzip.compress(raw, compresslevel=1, mtime=0)
    path.write_bytes(raw)
    return path
