"""Image datasets stored as folders of image files: ``PATH/{train,test}/<class>/<image>``.

For the paper's CIFAR-10 experiments (section 4) on a copy of CIFAR-10 kept as image files (or any
small labelled image set in the same layout). ``load_image_folder`` decodes every image with Pillow
into one preallocated uint8 array, checks the set as it goes, and caches the arrays, keyed by the
folder and a fingerprint of its files, so the next load of an unchanged folder skips decoding.

Rules:

* Class names are the sorted names of the folders in ``train/``; ``test/`` must have the same ones.
  Label ``i`` is ``classes[i]`` (the same order as torchvision's ``ImageFolder``).
* Images are the files with a known image suffix (``IMAGE_SUFFIXES``, any case) directly in a class
  folder, in sorted name order; hidden files, other files and subfolders are ignored. A class folder
  without images is an error.
* Every image has the size of the first one. If every image is greyscale (Pillow mode ``L`` or
  ``1``) the set keeps one channel, else every image is converted to RGB (alpha dropped, palettes
  expanded).
* A missing folder, an unreadable or corrupt file, or an image of another size raises DataError
  naming the folder or file, and what was expected vs found.
"""
from __future__ import annotations

import hashlib
import io
import os
import sys
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DataError
from .cache import array_sha256, cache_dir, load_arrays, save_arrays

if TYPE_CHECKING:
    import torch

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
SPLITS = ("train", "test")
KEYS = ("x_train", "y_train", "x_test", "y_test")
GREY_MODES = ("L", "1")
CHUNK = 256  # images per task of the decoding thread pool
LAYOUT = "PATH/train/<class>/<image> and PATH/test/<class>/<image>"


# ---------------------------------------------------------------------------------- tensors
def to_image_tensors(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """uint8 arrays -> ``x_*`` float32 (N, C, H, W) in [0, 1], ``y_*`` int64 (N,)."""
    import torch  # here, not at the top: `fflab data fetch` needs no torch

    out = {}
    for key, arr in arrays.items():
        if key.startswith("x"):
            out[key] = torch.from_numpy(np.ascontiguousarray(arr)).to(torch.float32).div_(255.0)
        else:
            out[key] = torch.from_numpy(arr.astype(np.int64))
    return out


# ---------------------------------------------------------------------------------- the folder
def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise DataError("reading an image folder needs Pillow, which is not installed: "
                        "pip install pillow") from None
    return Image


def _images_in(folder: Path) -> list[os.DirEntry]:
    try:
        entries = list(os.scandir(folder))
    except OSError as e:
        raise DataError(f"{folder}: cannot list ({e.strerror or e})") from None
    return sorted((e for e in entries if not e.name.startswith(".")
                   and e.name.lower().endswith(IMAGE_SUFFIXES) and e.is_file()), key=lambda e: e.name)


def _class_dirs(split_dir: Path) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))
    except OSError as e:
        raise DataError(f"{split_dir}: cannot list ({e.strerror or e})") from None


def scan_image_folder(path: str | Path) -> tuple[list[str], dict[str, list[tuple[str, int]]], str]:
    """(class names, split -> [(file path, label)], fingerprint) of the folder, after the layout checks.

    The fingerprint is a sha256 of every image's path relative to ``path``, size, mtime and ctime: any
    file added, removed, renamed or rewritten changes it.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: " + ("is not a folder" if root.exists() else "no such folder")
                        + f"; an image folder holds {LAYOUT}")
    missing = [s for s in SPLITS if not (root / s).is_dir()]
    if missing:
        raise DataError(f"{root}: no {' or '.join(s + '/' for s in missing)} folder; an image folder "
                        f"holds {LAYOUT}")
    classes = _class_dirs(root / "train")
    if not classes:
        raise DataError(f"{root / 'train'}: no class folders; expected train/<class>/<image>")
    test_classes = _class_dirs(root / "test")
    if test_classes != classes:
        lacking = sorted(set(classes) - set(test_classes))
        extra = sorted(set(test_classes) - set(classes))
        parts = ([f"missing from test/: {lacking}"] if lacking else []) + \
                ([f"only in test/: {extra}"] if extra else [])
        raise DataError(f"{root}: test/ must have the same class folders as train/ {classes}; "
                        + "; ".join(parts))
    files: dict[str, list[tuple[str, int]]] = {}
    h = hashlib.sha256()
    for split in SPLITS:
        files[split] = []
        for label, name in enumerate(classes):
            folder = root / split / name
            entries = _images_in(folder)
            if not entries:
                raise DataError(f"{folder}: no images in this class folder (looked for "
                                f"{', '.join(IMAGE_SUFFIXES)})")
            for e in entries:
                try:
                    st = e.stat()
                except OSError as err:
                    raise DataError(f"{e.path}: cannot read ({err.strerror or err})") from None
                h.update(f"{split}/{name}/{e.name}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\n"
                         .encode("utf-8", "surrogateescape"))
                files[split].append((e.path, label))  # str: 60000 Path objects cost ~1 s
    return classes, files, h.hexdigest()


# ---------------------------------------------------------------------------------- decoding
class _FirstFailure:
    """The lowest index that failed so far, shared by the decoding threads."""

    def __init__(self):
        self.index = None
        self.message = ""
        self._lock = threading.Lock()

    def before(self, i: int) -> bool:
        return self.index is not None and self.index < i

    def record(self, i: int, message: str) -> None:
        with self._lock:
            if self.index is None or i < self.index:
                self.index, self.message = i, message


def _decode_into(Image, paths: list[str], buf: np.ndarray, grey: np.ndarray, lo: int, hi: int,
                 size: tuple[int, int], first: str, failed: _FirstFailure) -> None:
    """Decode ``paths[lo:hi]`` into ``buf[lo:hi]`` ((3, H, W) each; greyscale repeated over the
    channels) up to its first failure. Skipped if a file before ``lo`` already failed, so the failure
    left in ``failed`` is the first in ``paths`` order, whichever thread met it."""
    if failed.before(lo):
        return
    for i in range(lo, hi):
        p = paths[i]
        try:
            # One read() instead of Pillow's many small ones: ~10% faster on small JPEGs.
            with open(p, "rb") as f, Image.open(io.BytesIO(f.read())) as im:
                if im.size != size:
                    failed.record(i, f"{p}: image is {im.size[0]}x{im.size[1]} (width x height), expected "
                                     f"{size[0]}x{size[1]} like {first}; every image must have the same size")
                    return
                if im.mode in GREY_MODES:
                    buf[i] = np.asarray(im.convert("L"))[None]
                    grey[i] = True
                else:
                    buf[i] = np.asarray(im if im.mode == "RGB" else im.convert("RGB")).transpose(2, 0, 1)
        except Exception as e:  # Pillow raises many types on a corrupt file (OSError, ValueError, ...)
            failed.record(i, f"{p}: cannot read this image ({type(e).__name__}: {e})")
            return


def decode_images(paths: list[str] | list[Path], *, workers: int | None = None) -> np.ndarray:
    """Decode ``paths`` (all of one size) into a uint8 array (N, C, H, W), C = 1 if every image is
    greyscale, else 3. ``workers`` threads decode in parallel (Pillow releases the GIL while it
    decodes); None picks min(4, CPUs). On 32x32 JPEGs threads gain little (~5% with 2 workers): most
    of the ~200 us an image goes to Pillow's header parsing, Python code that holds the GIL; they
    help with larger images. A failure names the first bad file in ``paths`` order."""
    Image = _pil()
    first = paths[0]
    try:
        with Image.open(first) as im:
            size = im.size
    except Exception as e:
        raise DataError(f"{first}: cannot read this image ({type(e).__name__}: {e})") from None
    w, h = size
    buf = np.empty((len(paths), 3, h, w), dtype=np.uint8)
    grey = np.zeros(len(paths), dtype=bool)
    failed = _FirstFailure()
    spans = [(lo, min(lo + CHUNK, len(paths))) for lo in range(0, len(paths), CHUNK)]
    workers = min(4, os.cpu_count() or 1) if workers is None else max(1, int(workers))
    with warnings.catch_warnings():
        # A huge image is refused by its size check anyway; never let Pillow's warning escape.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        if workers == 1 or len(spans) == 1:
            for lo, hi in spans:
                _decode_into(Image, paths, buf, grey, lo, hi, size, first, failed)
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fflab-decode") as pool:
                list(pool.map(lambda s: _decode_into(Image, paths, buf, grey, *s, size, first, failed),
                              spans))
    if failed.index is not None:
        raise DataError(failed.message)
    return np.ascontiguousarray(buf[:, :1]) if grey.all() else buf


# ---------------------------------------------------------------------------------- the cache
def folder_cache_path(root: Path) -> Path:
    key = hashlib.sha256(str(root.resolve()).encode("utf-8", "surrogateescape")).hexdigest()[:20]
    return cache_dir() / "image_folders" / f"{key}.npz"


def _cached(path: Path, root: Path, fingerprint: str, classes: list[str], counts: dict[str, int]
            ) -> dict[str, np.ndarray] | None:
    """The cached arrays if they were built from exactly these files and are intact, else None."""
    try:
        arrays, meta = load_arrays(path)
    except DataError:
        return None
    if (meta.get("path") != str(root.resolve()) or meta.get("fingerprint") != fingerprint
            or meta.get("classes") != classes or set(arrays) != set(KEYS)):
        return None
    sha = meta.get("sha256") or {}
    for split in SPLITS:
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if (x.dtype != np.uint8 or x.ndim != 4 or x.shape[0] != counts[split] or y.shape != (counts[split],)
                or x.shape[1:] != arrays["x_train"].shape[1:]):
            return None
    if any(array_sha256(arrays[k]) != sha.get(k) for k in KEYS):
        return None
    return arrays


def read_image_folder(path: str | Path, *, workers: int | None = None, cache: bool = True
                      ) -> tuple[dict[str, np.ndarray], list[str]]:
    """The uint8 arrays (``x_*`` (N, C, H, W), ``y_*`` (N,) uint8 or int64) and the class names of an
    image folder, from the cache when it was built from exactly these files."""
    root = Path(path).expanduser()
    classes, files, fingerprint = scan_image_folder(root)
    counts = {s: len(files[s]) for s in SPLITS}
    cache_path = folder_cache_path(root)
    if cache and (hit := _cached(cache_path, root, fingerprint, classes, counts)) is not None:
        return hit, classes
    paths = [p for s in SPLITS for p, _ in files[s]]
    if len(paths) >= 5000:
        print(f"fflab: decoding {len(paths)} images from {root} (once: later loads use the cache)",
              file=sys.stderr, flush=True)
    x = decode_images(paths, workers=workers)
    label_dtype = np.uint8 if len(classes) <= 256 else np.int64
    n = counts["train"]
    arrays = {"x_train": x[:n], "y_train": np.array([c for _, c in files["train"]], dtype=label_dtype),
              "x_test": x[n:], "y_test": np.array([c for _, c in files["test"]], dtype=label_dtype)}
    if cache:
        meta = {"kind": "image_folder", "path": str(root.resolve()), "fingerprint": fingerprint,
                "classes": classes, "sha256": {k: array_sha256(v) for k, v in arrays.items()}}
        try:
            save_arrays(cache_path, arrays, meta)
        except OSError as e:
            warnings.warn(f"fflab: could not write the data cache {cache_path} ({e}); set FFLAB_CACHE_DIR "
                          f"to a writable folder", RuntimeWarning, stacklevel=3)
    return arrays, classes


def load_image_folder(path: str | Path, *, workers: int | None = None, cache: bool = True
                      ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """An image folder (``PATH/{train,test}/<class>/<image>``) as tensors, and its class names.

    Returns ({``x_train`` (N, C, H, W) float32 in [0, 1], ``y_train`` (N,) int64, ``x_test``,
    ``y_test``}, classes), C = 1 for an all-greyscale set, else 3; label ``i`` is ``classes[i]``, the
    sorted folder names of ``train/``. Raises DataError naming the folder or file on a bad layout,
    an empty class, an unreadable image or one whose size differs from the first.
    """
    arrays, classes = read_image_folder(path, workers=workers, cache=cache)
    return to_image_tensors(arrays), classes
