"""Tests of fflab.data.folder: image datasets stored as PATH/{train,test}/<class>/<image> files.

Every folder here is tiny and written by the test with Pillow (PNG, lossless, so the decoded values
are known exactly; JPEG where only the shapes matter).
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fflab.data import folder as folder_mod
from fflab.data.folder import load_image_folder, read_image_folder
from fflab.errors import DataError

W, H = 6, 4  # width x height of the test images


def write_image(path: Path, arr: np.ndarray, mode: str | None = None) -> None:
    """``arr``: (H, W, 3) RGB, (H, W, 4) RGBA or (H, W) L uint8, saved as it is or in ``mode``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(arr)
    if mode == "P":
        im = im.convert("P", palette=Image.Palette.ADAPTIVE)  # exact for a few colours
    im.save(path)


def make_folder(root: Path, classes=("dog", "cat", "bird"), n_train=3, n_test=2, grey=False, seed=0,
                suffix=".png") -> dict[str, np.ndarray]:
    """Random PNGs in root/{train,test}/<class>/; returns the expected uint8 arrays (N, C, H, W) in the
    loader's order (sorted classes, sorted file names)."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        xs, ys = [], []
        for label, name in enumerate(sorted(classes)):
            for i in range(n):
                arr = rng.integers(0, 256, (H, W) if grey else (H, W, 3), dtype=np.uint8)
                write_image(root / split / name / f"{i:04d}{suffix}", arr)
                xs.append(arr[None] if grey else arr.transpose(2, 0, 1))
                ys.append(label)
        out[f"x_{split}"], out[f"y_{split}"] = np.stack(xs), np.array(ys)
    return out


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FFLAB_CACHE_DIR", str(tmp_path / "cache"))


# ---------------------------------------------------------------------------------- happy paths
def test_rgb_folder_shapes_values_and_labels(tmp_path):
    want = make_folder(tmp_path / "set")
    d, classes = load_image_folder(tmp_path / "set")
    assert classes == ["bird", "cat", "dog"]  # sorted folder names, whatever order they were made in
    assert set(d) == {"x_train", "y_train", "x_test", "y_test"}
    assert d["x_train"].shape == (9, 3, H, W) and d["x_test"].shape == (6, 3, H, W)
    assert d["x_train"].dtype == torch.float32 and d["y_train"].dtype == torch.int64
    assert 0.0 <= float(d["x_train"].min()) and float(d["x_train"].max()) <= 1.0
    for split in ("train", "test"):
        torch.testing.assert_close(d[f"x_{split}"], torch.from_numpy(want[f"x_{split}"]).float() / 255)
        assert d[f"y_{split}"].tolist() == want[f"y_{split}"].tolist()
    assert d["y_train"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_all_greyscale_keeps_one_channel(tmp_path):
    want = make_folder(tmp_path / "set", grey=True)
    d, _ = load_image_folder(tmp_path / "set")
    assert d["x_train"].shape == (9, 1, H, W)
    torch.testing.assert_close(d["x_test"], torch.from_numpy(want["x_test"]).float() / 255)


def test_mixed_modes_become_rgb(tmp_path):
    root = tmp_path / "set"
    make_folder(root)
    grey = np.arange(H * W, dtype=np.uint8).reshape(H, W) * 7
    write_image(root / "train" / "cat" / "9_grey.png", grey)
    rgba = np.dstack([np.full((H, W), v, np.uint8) for v in (10, 20, 30, 40)])
    write_image(root / "train" / "cat" / "9_rgba.png", rgba)
    write_image(root / "test" / "cat" / "9_palette.png", np.full((H, W, 3), 200, np.uint8), mode="P")
    arrays, _ = read_image_folder(root)
    assert arrays["x_train"].shape == (11, 3, H, W)
    # train/cat files in order: 0000..0002, 9_grey, 9_rgba (after bird's 3 images)
    np.testing.assert_array_equal(arrays["x_train"][6], np.stack([grey] * 3))
    np.testing.assert_array_equal(arrays["x_train"][7], np.stack([np.full((H, W), v) for v in (10, 20, 30)]))
    np.testing.assert_array_equal(arrays["x_test"][4], np.full((3, H, W), 200))


def test_jpeg_and_upper_case_suffixes(tmp_path):
    make_folder(tmp_path / "set", suffix=".JPG")
    d, classes = load_image_folder(tmp_path / "set")
    assert d["x_train"].shape == (9, 3, H, W) and classes == ["bird", "cat", "dog"]


def test_hidden_and_non_image_files_are_ignored(tmp_path):
    root = tmp_path / "set"
    make_folder(root)
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    (root / "train" / "cat" / ".DS_Store").write_bytes(b"\0\1")
    (root / "train" / ".hidden_class").mkdir()
    (root / "train" / "README.md").write_text("hello")
    (root / "train" / "cat" / "sub").mkdir()
    d, classes = load_image_folder(root)
    assert classes == ["bird", "cat", "dog"] and d["x_train"].shape[0] == 9


def test_second_load_comes_from_the_cache_until_a_file_changes(tmp_path, monkeypatch):
    root = tmp_path / "set"
    want = make_folder(root)
    first, _ = read_image_folder(root)
    assert len(list((tmp_path / "cache" / "image_folders").glob("*.npz"))) == 1

    def no_decoding(*a, **k):
        raise AssertionError("decoded again although the folder did not change")

    monkeypatch.setattr(folder_mod, "decode_images", no_decoding)
    again, classes = read_image_folder(root)
    for k in first:
        np.testing.assert_array_equal(again[k], first[k])
    assert classes == ["bird", "cat", "dog"]
    monkeypatch.undo()
    monkeypatch.setenv("FFLAB_CACHE_DIR", str(tmp_path / "cache"))
    # Rewrite one image with other pixels: its size and name stay, its mtime/ctime change.
    new = np.zeros((H, W, 3), np.uint8)
    write_image(root / "test" / "bird" / "0000.png", new)
    got, _ = read_image_folder(root)
    np.testing.assert_array_equal(got["x_test"][0], new.transpose(2, 0, 1))
    np.testing.assert_array_equal(got["x_test"][1:], want["x_test"][1:])


def test_damaged_cache_is_rebuilt(tmp_path):
    root = tmp_path / "set"
    want = make_folder(root)
    read_image_folder(root)
    (cache,) = (tmp_path / "cache" / "image_folders").glob("*.npz")
    cache.write_bytes(cache.read_bytes()[:-100])
    got, _ = read_image_folder(root)
    np.testing.assert_array_equal(got["x_train"], want["x_train"])


def test_threads_give_the_same_arrays(tmp_path, monkeypatch):
    root = tmp_path / "set"
    make_folder(root, n_train=5)
    monkeypatch.setattr(folder_mod, "CHUNK", 2)
    one, _ = read_image_folder(root, workers=1, cache=False)
    three, _ = read_image_folder(root, workers=3, cache=False)
    for k in one:
        np.testing.assert_array_equal(one[k], three[k])


# ---------------------------------------------------------------------------------- errors
def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match=rf"{tmp_path / 'nope'}: no such folder; an image folder holds "
                                        r"PATH/train/<class>/<image> and PATH/test/<class>/<image>"):
        load_image_folder(tmp_path / "nope")


@pytest.mark.parametrize("split", ["train", "test"])
def test_missing_split(tmp_path, split):
    root = tmp_path / "set"
    make_folder(root)
    os.rename(root / split, root / f"old_{split}")
    with pytest.raises(DataError, match=rf"{root}: no {split}/ folder"):
        load_image_folder(root)


def test_no_class_folders(tmp_path):
    (tmp_path / "set" / "train").mkdir(parents=True)
    (tmp_path / "set" / "test").mkdir()
    with pytest.raises(DataError, match="train: no class folders"):
        load_image_folder(tmp_path / "set")


def test_test_classes_differ_from_train(tmp_path):
    root = tmp_path / "set"
    make_folder(root)
    os.rename(root / "test" / "dog", root / "test" / "wolf")
    with pytest.raises(DataError, match=r"test/ must have the same class folders as train/ \['bird', 'cat', "
                                        r"'dog'\]; missing from test/: \['dog'\]; only in test/: \['wolf'\]"):
        load_image_folder(root)


def test_empty_class_folder(tmp_path):
    root = tmp_path / "set"
    make_folder(root)
    shutil.rmtree(root / "test" / "cat")
    (root / "test" / "cat").mkdir()
    (root / "test" / "cat" / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match=rf"{root / 'test' / 'cat'}: no images in this class folder"):
        load_image_folder(root)


@pytest.mark.parametrize("which", ["train/bird/0000.png", "test/cat/0001.png"])  # the first: sets the size
@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_image_is_named(tmp_path, damage, which):
    root = tmp_path / "set"
    make_folder(root)
    bad = root / which
    data = bad.read_bytes()
    bad.write_bytes(b"this is not a png" if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(DataError, match=rf"{bad}: cannot read this image \("):
        load_image_folder(root)


def test_first_image_of_another_size_is_named(tmp_path, monkeypatch):
    root = tmp_path / "set"
    make_folder(root, n_train=5)
    monkeypatch.setattr(folder_mod, "CHUNK", 2)  # several chunks: the earliest bad file must win
    first = root / "train" / "bird" / "0000.png"
    small = root / "train" / "cat" / "0003.png"
    write_image(small, np.zeros((H, W - 1, 3), np.uint8))
    write_image(root / "test" / "dog" / "0001.png", np.zeros((H + 1, W, 3), np.uint8))
    for workers in (1, 4):
        with pytest.raises(DataError) as e:
            read_image_folder(root, workers=workers, cache=False)
        assert str(e.value) == (f"{small}: image is {W - 1}x{H} (width x height), expected {W}x{H} like "
                                f"{first}; every image must have the same size")


def test_without_pillow_the_error_says_how_to_install_it(tmp_path, monkeypatch):
    make_folder(tmp_path / "set")
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(DataError, match="needs Pillow, which is not installed: pip install pillow"):
        load_image_folder(tmp_path / "set")
