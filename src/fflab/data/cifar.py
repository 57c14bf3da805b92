"""CIFAR-10 from the official archives: find them, check them, cache them, return tensors.

Serves the paper's CIFAR-10 experiments (its "Experiments with CIFAR-10" section: 32x32 colour
images, 50000 train / 10000 test, ten classes). ``load_cifar10`` reads the dataset authors' own files, in either layout:

* ``cifar-10-python.tar.gz`` (MD5 c58f30108f718f92721af3b95e74349a): members
  ``cifar-10-batches-py/data_batch_1..5`` and ``test_batch``, each a pickle of a dict with
  ``b"data"`` (a (10000, 3072) uint8 numpy array: the R, G and B planes of a 32x32 image, each in
  row-major order) and ``b"labels"`` (a list of 10000 ints in 0..9);
* ``cifar-10-binary.tar.gz`` (MD5 c32a1d4ab5d03f1284b67883e8d87530): members
  ``cifar-10-batches-bin/data_batch_1..5.bin`` and ``test_batch.bin``, each 10000 records of 3073
  bytes (one label byte, then the 3072 pixel bytes in the same order);

or the folder either archive extracts to (``cifar-10-batches-py/``, ``cifar-10-batches-bin/``).

Sources follow the rules of ``fflab.data.mnist``. A data dir named by the user (``data_dir=`` /
``--data-dir``, else ``$FFLAB_DATA_DIR``) is the only source: one of the above in it (or in its
``cifar10/`` or ``cifar-10/`` subfolder, or the archive itself named as the data dir) is used if it
passes every check, and anything else is a
DataError naming the file and what was expected vs found. Without a data dir: the user cache
(``fflab.data.cache_dir()/cifar10.npz``), then the official HTTPS address of the python archive.

Pickles are never trusted: a python batch is read by an unpickler that builds only dicts, lists,
bytes, str, ints and one uint8 numpy array (``numpy.core.multiarray._reconstruct``,
``numpy.ndarray`` and ``numpy.dtype``, exactly what the official files hold); any other global in
the stream (the way a hostile pickle runs code) is refused before it is looked up.
"""
from __future__ import annotations

import io
import tarfile
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DataError
from . import sources
from .cache import array_sha256, cache_dir, load_arrays, write_cache
from .mnist import Fetched, _md5, _say, named_data_dir
from .safe_pickle import safe_unpickle
from .sources import SourceUnavailable

if TYPE_CHECKING:
    import torch

PYTHON_ARCHIVE = "cifar-10-python.tar.gz"
BINARY_ARCHIVE = "cifar-10-binary.tar.gz"
PYTHON_FOLDER = "cifar-10-batches-py"
BINARY_FOLDER = "cifar-10-batches-bin"
FOLDER_OF = {PYTHON_ARCHIVE: PYTHON_FOLDER, BINARY_ARCHIVE: BINARY_FOLDER}
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGE_SHAPE = (3, 32, 32)
PIXELS = 3 * 32 * 32
RECORD_BYTES = 1 + PIXELS  # binary layout: one label byte, then the pixels
HOME_PAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"

# Bounds on what a corrupt or hostile file may make us hold in memory (the real archives are ~163 MiB
# and ~178 MiB uncompressed).
MAX_ARCHIVE_BYTES = 256 << 20
MAX_TAR_BYTES = 512 << 20


@dataclass(frozen=True)
class CifarSpec:
    """Everything needed to get and check CIFAR-10. Plain data: tests replace it with a tiny one."""
    name: str = "cifar10"
    train_batches: int = 5
    batch_size: int = 10000  # images in each batch file; the test batch has as many
    num_classes: int = 10
    # Archive file name -> MD5 and size in bytes, as published on the dataset's home page.
    archive_md5: dict[str, str] = field(default_factory=lambda: {
        PYTHON_ARCHIVE: "c58f30108f718f92721af3b95e74349a",
        BINARY_ARCHIVE: "c32a1d4ab5d03f1284b67883e8d87530"})
    archive_size: dict[str, int] = field(default_factory=lambda: {
        PYTHON_ARCHIVE: 170498071, BINARY_ARCHIVE: 170052171})
    # MD5 of each file of the extracted python archive (the values torchvision checks too). The binary
    # layout's files have no published MD5: an extracted binary folder gets the format checks only.
    python_batch_md5: dict[str, str] = field(default_factory=lambda: {
        "data_batch_1": "c99cafc152244af753f735de768cd75f",
        "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "data_batch_4": "634d18415352ddfa80567beed471001a",
        "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        "test_batch": "40351d587109b95175f43aff81a1287e"})
    url: str = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    subdirs: tuple[str, ...] = ("cifar10", "cifar-10")  # also looked in, inside the data dir

    @property
    def n_train(self) -> int:
        return self.train_batches * self.batch_size

    @property
    def n_test(self) -> int:
        return self.batch_size

    def batches(self, fmt: str) -> dict[str, str]:
        """Split ("train"/"test") of each batch file name, in order, for ``fmt`` "python" or "binary"."""
        ext = ".bin" if fmt == "binary" else ""
        out = {f"data_batch_{i}{ext}": "train" for i in range(1, self.train_batches + 1)}
        out[f"test_batch{ext}"] = "test"
        return out

    def shape(self, key: str) -> tuple[int, ...]:
        n = self.n_train if key.endswith("train") else self.n_test
        return (n, *IMAGE_SHAPE) if key.startswith("x") else (n,)


CIFAR10 = CifarSpec()
KEYS = ("x_train", "y_train", "x_test", "y_test")


# ---------------------------------------------------------------------------------- batch files
def _check_batch(x: np.ndarray, y: np.ndarray, *, name: str, expected: int, spec: CifarSpec,
                 unit: str = "images") -> None:
    if x.shape[0] != expected:
        raise DataError(f"{name}: expected {expected} {unit} in each batch file, found {x.shape[0]}")
    if y.size and (int(y.min()) < 0 or int(y.max()) >= spec.num_classes):
        bad = int(np.flatnonzero((y < 0) | (y >= spec.num_classes))[0])
        raise DataError(f"{name}: label {int(y[bad])} of image {bad} is out of range "
                        f"0..{spec.num_classes - 1}")


def decode_python_batch(data: bytes, *, name: str, spec: CifarSpec = CIFAR10
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(x (n, 3, 32, 32) uint8, y (n,) uint8) of one python batch file, checked."""
    obj = safe_unpickle(data, name=name)
    if not isinstance(obj, dict):
        raise DataError(f"{name}: expected a pickled dict (a CIFAR-10 python batch), found "
                        f"{type(obj).__name__}")
    d = {k.decode("latin-1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
    missing = [k for k in ("data", "labels") if k not in d]
    if missing:
        raise DataError(f"{name}: no {' or '.join(repr(k) for k in missing)} entry; entries found: "
                        f"{sorted(map(str, d))}")
    x = d["data"]
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != PIXELS:
        found = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
        raise DataError(f"{name}: 'data' must be a uint8 array of shape (n, {PIXELS}), found {found}")
    labels = d["labels"]
    if not isinstance(labels, list | tuple) or not all(type(v) is int for v in labels):
        raise DataError(f"{name}: 'labels' must be a list of ints, found {type(labels).__name__}"
                        + (" with other items" if isinstance(labels, list | tuple) else ""))
    if len(labels) != x.shape[0]:
        raise DataError(f"{name}: {x.shape[0]} images but {len(labels)} labels")
    y = np.array(labels, dtype=np.int64)
    _check_batch(x, y, name=name, expected=spec.batch_size, spec=spec)
    return x.reshape(-1, *IMAGE_SHAPE), y.astype(np.uint8)


def decode_binary_batch(data: bytes, *, name: str, spec: CifarSpec = CIFAR10
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(x (n, 3, 32, 32) uint8, y (n,) uint8) of one binary batch file (3073-byte records), checked."""
    want = spec.batch_size * RECORD_BYTES
    if len(data) % RECORD_BYTES:
        raise DataError(f"{name}: {len(data)} bytes is not a whole number of {RECORD_BYTES}-byte records "
                        f"(1 label byte + {PIXELS} pixel bytes); expected {spec.batch_size} records = "
                        f"{want} bytes (truncated or not a CIFAR-10 binary batch)")
    rec = np.frombuffer(data, dtype=np.uint8).reshape(-1, RECORD_BYTES)
    if rec.shape[0] != spec.batch_size:
        raise DataError(f"{name}: expected {spec.batch_size} records ({want} bytes), found "
                        f"{rec.shape[0]} ({len(data)} bytes)")
    y = rec[:, 0]
    _check_batch(rec, y, name=name, expected=spec.batch_size, spec=spec, unit="records")
    return rec[:, 1:].reshape(-1, *IMAGE_SHAPE), y.copy()


def decode_batches(spec: CifarSpec, fmt: str, blobs: dict[str, bytes], names: dict[str, str]
                   ) -> dict[str, np.ndarray]:
    """The four uint8 arrays from the batch files (file name -> bytes) of layout ``fmt``."""
    decode = decode_binary_batch if fmt == "binary" else decode_python_batch
    parts: dict[str, list] = {"train": [], "test": []}
    for fname, split in spec.batches(fmt).items():
        parts[split].append(decode(blobs[fname], name=names[fname], spec=spec))
    arrays = {}
    for split, got in parts.items():
        arrays[f"x_{split}"] = np.ascontiguousarray(np.concatenate([x for x, _ in got]))
        arrays[f"y_{split}"] = np.concatenate([y for _, y in got])
    for key in KEYS:  # holds by construction; a cheap guard for the counts the paper's setup needs
        if arrays[key].shape != spec.shape(key):
            raise DataError(f"{spec.name}: {key} has shape {arrays[key].shape}, expected {spec.shape(key)}")
    return arrays


# ---------------------------------------------------------------------------------- archives
def _gunzip_tar(blob: bytes, *, name: str, expected_size: int | None) -> bytes:
    size_note = f"file is {len(blob)} bytes" + (f", the official archive {expected_size} bytes"
                                                if expected_size else "")
    if blob[:2] != b"\x1f\x8b":
        raise DataError(f"{name}: not a gzip file (starts with {blob[:16]!r}; {size_note})")
    d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        raw = d.decompress(blob, MAX_TAR_BYTES + 1)
    except zlib.error as e:
        raise DataError(f"{name}: corrupt gzip data ({e}; {size_note})") from None
    if len(raw) > MAX_TAR_BYTES:
        raise DataError(f"{name}: decompresses to more than {MAX_TAR_BYTES} bytes; not a CIFAR-10 archive")
    if not d.eof:
        raise DataError(f"{name}: truncated: the gzip stream ends early ({size_note}); download it again")
    return raw


def read_archive(spec: CifarSpec, blob: bytes, *, name: str, archive: str) -> dict[str, np.ndarray]:
    """Check and decode an official archive (``archive`` is its official file name, which fixes the
    layout and the MD5 expected). Order of checks: gzip stream, tar members (no absolute path, ``..``,
    link or device), the batch files and their content, then the MD5 of the whole archive: a format
    error says more than a hash mismatch, so it comes first (with the MD5s appended)."""
    expected_md5 = spec.archive_md5.get(archive)
    found_md5 = _md5(blob)
    md5_note = (f"; MD5 expected {expected_md5}, found {found_md5}"
                if expected_md5 and found_md5 != expected_md5 else "")
    fmt = "binary" if archive == BINARY_ARCHIVE else "python"
    folder = FOLDER_OF[archive]
    try:
        raw = _gunzip_tar(blob, name=name, expected_size=spec.archive_size.get(archive))
        try:
            with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
                members = {m.name: m for m in sources.check_tar_members(tar, name=name)}
                wanted = {f: f"{folder}/{f}" for f in spec.batches(fmt)}
                lacking = [m for m in wanted.values() if m not in members or not members[m].isfile()]
                if lacking:
                    raise DataError(f"{name}: archive lacks {', '.join(lacking)} (it holds "
                                    f"{len(members)} members, e.g. {sorted(members)[:4]})")
                blobs = {f: tar.extractfile(members[m]).read() for f, m in wanted.items()}
        except (tarfile.TarError, EOFError) as e:
            raise DataError(f"{name}: corrupt tar archive inside the gzip stream ({e})") from None
        arrays = decode_batches(spec, fmt, blobs, {f: f"{name}:{m}" for f, m in wanted.items()})
    except DataError as e:
        raise DataError(f"{e}{md5_note}") from None
    if md5_note:
        raise DataError(f"{name}: MD5 mismatch: expected {expected_md5}, found {found_md5}; the file is "
                        f"corrupt or not the original {archive}")
    return arrays


def read_batch_folder(spec: CifarSpec, folder: Path, fmt: str) -> dict[str, np.ndarray]:
    """Check and decode an extracted folder. Python batch files are also checked against their
    published MD5s, after the format checks; binary ones have none."""
    paths = batch_paths(spec, folder, fmt)
    blobs = {}
    for f, p in paths.items():
        try:
            blobs[f] = p.read_bytes()
        except OSError as e:
            raise DataError(f"{p}: cannot read ({e.strerror or e})") from None
    arrays = decode_batches(spec, fmt, blobs, {f: str(p) for f, p in paths.items()})
    if fmt == "python":
        for f, data in blobs.items():
            want = spec.python_batch_md5.get(f)
            if want and (found := _md5(data)) != want:
                raise DataError(f"{paths[f]}: MD5 mismatch: expected {want}, found {found}; the file is "
                                f"corrupt or not the original {PYTHON_FOLDER}/{f}")
    return arrays


def batch_paths(spec: CifarSpec, folder: Path, fmt: str) -> dict[str, Path]:
    paths = {f: folder / f for f in spec.batches(fmt)}
    missing = [f for f, p in paths.items() if not p.is_file()]
    if missing:
        raise DataError(f"{folder}: lacks {', '.join(missing)} (an extracted "
                        f"{PYTHON_ARCHIVE if fmt == 'python' else BINARY_ARCHIVE} has "
                        f"{', '.join(paths)})")
    return paths


# ---------------------------------------------------------------------------------- the cache
def load_cache(spec: CifarSpec, path: Path) -> tuple[dict[str, np.ndarray], dict]:
    """A verified cache entry: the four arrays with the right dtype, shape, label range and the
    sha256 recorded when it was built. Missing -> SourceUnavailable; anything else -> DataError."""
    arrays, meta = load_arrays(path)
    if meta.get("name") != spec.name:
        raise DataError(f"{path}: holds {meta.get('name')!r}, not {spec.name!r}")
    if set(arrays) != set(KEYS):
        raise DataError(f"{path}: entries {sorted(arrays)}, expected {sorted(KEYS)}")
    recorded = meta.get("sha256") or {}
    for key in KEYS:
        arr = arrays[key]
        if arr.dtype != np.uint8 or arr.shape != spec.shape(key):
            raise DataError(f"{path}: {key} is {arr.dtype} {arr.shape}, expected uint8 {spec.shape(key)}")
        if (found := array_sha256(arr)) != recorded.get(key):
            raise DataError(f"{path}: {key} sha256 mismatch: expected {recorded.get(key)}, found {found}")
    if int(arrays["y_train"].max(initial=0)) >= spec.num_classes or \
            int(arrays["y_test"].max(initial=0)) >= spec.num_classes:
        raise DataError(f"{path}: label out of range 0..{spec.num_classes - 1}")
    return arrays, meta


def _write_cache(path: Path, arrays: dict[str, np.ndarray], meta: dict) -> Path | None:
    """The cache entry, with each array's SHA-256 for ``load_cache`` to check."""
    return write_cache(path, arrays, dict(meta, sha256={k: array_sha256(v) for k, v in arrays.items()}),
                       stacklevel=4)


def _cache_if_built_from(spec: CifarSpec, path: Path, fp) -> dict[str, np.ndarray] | None:
    try:
        arrays, meta = load_cache(spec, path)
    except DataError:
        return None
    return arrays if meta.get("fingerprint") == fp else None


# ---------------------------------------------------------------------------------- sources
def find_local(dirs: list[Path]) -> tuple[str, Path] | None:
    """The first CIFAR-10 copy in ``dirs``: (kind, path), kind one of the two archive names (an
    archive is checked by its MD5, so it is preferred), "python" or "binary" (an extracted folder,
    ``cifar-10-batches-*/`` or the folder itself if it holds the batch files)."""
    for d in dirs:
        if not d.is_dir():
            continue
        for archive in (PYTHON_ARCHIVE, BINARY_ARCHIVE):
            if (d / archive).is_file():
                return archive, d / archive
        for fmt, sub, probe in (("python", PYTHON_FOLDER, "data_batch_1"),
                                ("binary", BINARY_FOLDER, "data_batch_1.bin")):
            if (d / sub).is_dir():
                return fmt, d / sub
            if (d / probe).is_file():
                return fmt, d
    return None


def _unset_hint(how: str) -> str:
    return ("unset FFLAB_DATA_DIR" if how == "FFLAB_DATA_DIR"
            else "leave out data_dir / --data-dir (and FFLAB_DATA_DIR)") + \
        " to use the cache and the official download"


def _from_named_dir(spec: CifarSpec, named: tuple[str, str], cache_path: Path) -> Fetched:
    d, how = named
    root = Path(d).expanduser()
    label = f"data dir {d} ({how})"
    dirs = [root] + [root / sub for sub in spec.subdirs]
    # The archive itself may be named instead of its folder.
    found = (root.name, root) if root.name in FOLDER_OF and root.is_file() else find_local(dirs)
    if found is None:
        why = "does not exist" if not root.exists() else ("is not a folder" if not root.is_dir()
                                                         else "holds none of them")
        raise DataError(
            f"data dir {d} ({how}) has no {spec.name} files: {root} {why}\n"
            f"  looked for: {PYTHON_ARCHIVE}, {BINARY_ARCHIVE}, {PYTHON_FOLDER}/, {BINARY_FOLDER}/ "
            f"(or the batch files themselves)\n"
            f"  in: {', '.join(str(p) for p in dirs)}\n"
            f"Fix: download {PYTHON_ARCHIVE} from {HOME_PAGE} into one of those folders, or "
            f"{_unset_hint(how)}.")
    kind, path = found
    try:
        files = [path] if kind in FOLDER_OF else list(batch_paths(spec, path, kind).values())
        fp = sources.fingerprint(files)
        hit = _cache_if_built_from(spec, cache_path, fp)
        if hit is not None:
            return Fetched(spec.name, hit, f"cache {cache_path} (built from these files; unchanged)",
                           label, cache_path)
        if kind in FOLDER_OF:
            try:
                blob = path.read_bytes()
            except OSError as e:
                raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
            arrays = read_archive(spec, blob, name=str(path), archive=kind)
        else:
            arrays = read_batch_folder(spec, path, kind)
    except DataError as e:
        what = (f"a good copy of the original {kind} (MD5 {spec.archive_md5.get(kind)}, from {HOME_PAGE})"
                if kind in FOLDER_OF else f"a good copy of the extracted {spec.name} files")
        raise DataError(f"{e}\n  This is in the data dir {d} ({how}). A named data dir is used alone, so "
                        f"no other source was tried.\nFix: replace it with {what}, or {_unset_hint(how)}."
                        ) from None
    source = f"{label}: {path}"
    meta = {"name": spec.name, "origin": source, "files": [str(p) for p in files], "fingerprint": fp}
    return Fetched(spec.name, arrays, source, source, _write_cache(cache_path, arrays, meta))


def fetch_cifar10(*, data_dir: str | Path | None = None, download: bool = True,
                  spec: CifarSpec | None = None) -> Fetched:
    """Get the checked uint8 arrays of CIFAR-10 and cache them: ``x_train`` (50000, 3, 32, 32),
    ``y_train`` (50000,), ``x_test`` (10000, 3, 32, 32), ``y_test`` (10000,).

    From the data dir if one is named (``data_dir``, else ``$FFLAB_DATA_DIR``): the copy there passes
    every check or this raises DataError naming the file and what was expected vs found; nothing else
    is tried. Otherwise from the cache, else the official python archive over HTTPS (skipped with
    ``download=False``). Raises DataError listing each source and why it failed when none works.
    """
    spec = spec or CIFAR10
    cache_path = cache_dir() / f"{spec.name}.npz"
    if (named := named_data_dir(data_dir)) is not None:
        return _from_named_dir(spec, named, cache_path)
    tried: list[tuple[str, str]] = [("data dir", "not set (pass --data-dir DIR or set FFLAB_DATA_DIR)")]
    corrupt: list[str] = []
    cache_label = f"cache {cache_path}"
    try:
        arrays, meta = load_cache(spec, cache_path)
        return Fetched(spec.name, arrays, cache_label, meta.get("origin", "?"), cache_path, tried)
    except DataError as e:
        tried.append((cache_label, str(e)))
        if not isinstance(e, SourceUnavailable):
            corrupt.append(f"{cache_label}: {e}")
    if not download:
        tried.append((spec.url, "skipped: download=False"))
    else:
        try:
            _say(f"downloading {spec.name} from {spec.url} (about 163 MB)")
            blob = sources.download(spec.url, max_bytes=MAX_ARCHIVE_BYTES)
            arrays = read_archive(spec, blob, name=spec.url, archive=PYTHON_ARCHIVE)
        except DataError as e:
            tried.append((spec.url, str(e)))
        else:
            if corrupt:
                warnings.warn(f"fflab: {spec.name}: ignored files that failed a check:\n  "
                              + "\n  ".join(corrupt) + f"\n  used: {spec.url}", RuntimeWarning, stacklevel=2)
            meta = {"name": spec.name, "origin": spec.url, "files": [spec.url], "fingerprint": None}
            return Fetched(spec.name, arrays, spec.url, spec.url, _write_cache(cache_path, arrays, meta),
                           tried)
    lines = "\n".join(f"  {i}. {lab}: {why}" for i, (lab, why) in enumerate(tried, 1))
    raise DataError(
        f"could not get {spec.name}; tried {len(tried)} sources:\n{lines}\n"
        f"Fix: download {PYTHON_ARCHIVE} (or {BINARY_ARCHIVE}) from {HOME_PAGE} on a machine with "
        f"internet access, put it in a folder and pass --data-dir DIR (or set FFLAB_DATA_DIR).")


def load_cifar10(*, data_dir: str | Path | None = None, download: bool = True) -> dict[str, torch.Tensor]:
    """CIFAR-10 as tensors, fetched and cached on first use.

    Returns ``x_train`` (50000, 3, 32, 32) float32 in [0, 1], ``y_train`` (50000,) int64, ``x_test``
    (10000, 3, 32, 32), ``y_test`` (10000,); class ``i`` is ``CLASSES[i]``. Raises DataError when no
    source has valid files, or when the named data dir lacks them or holds a bad one.
    """
    from .folder import to_image_tensors

    return to_image_tensors(fetch_cifar10(data_dir=data_dir, download=download).arrays)
