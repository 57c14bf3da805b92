"""Tests of fflab.data.cifar: the official CIFAR-10 layouts, their checks, the sources and the cache.

No test touches the network or the real archive: every archive here is a tiny synthetic one in the
official layout (2 train batches of 7 images and a test batch of 7), made by the test, and the spec
(counts, MD5s) is shrunk to match it. The python batches are written with the opcodes Python 2's
cPickle used for the official files, so the restricted unpickler meets what the real files hold.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import struct
import tarfile
import urllib.error
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from fflab.data import cache as cache_mod
from fflab.data import cifar, sources
from fflab.data.cifar import BINARY_ARCHIVE, BINARY_FOLDER, PYTHON_ARCHIVE, PYTHON_FOLDER, fetch_cifar10
from fflab.errors import DataError

N = 7  # images per batch file in these tests (10000 in the real files)


# ---------------------------------------------------------------------------------- synthetic files
def _s(b: bytes) -> bytes:  # SHORT_BINSTRING / BINSTRING: a Python 2 str
    return (b"U" + bytes([len(b)]) + b) if len(b) < 256 else (b"T" + struct.pack("<I", len(b)) + b)


def _i(n: int) -> bytes:  # BININT1 / BININT2 / BININT
    if 0 <= n < 256:
        return b"K" + bytes([n])
    if 0 <= n < 65536:
        return b"M" + struct.pack("<H", n)
    return b"J" + struct.pack("<i", n)


def py2_pickle(d: dict) -> bytes:
    """``d`` pickled the way Python 2's cPickle wrote the official batches: protocol 2, strings as
    BINSTRING, the uint8 array through numpy.core.multiarray._reconstruct, numpy.ndarray, numpy.dtype."""
    out = bytearray(b"\x80\x02}(")
    for k, v in d.items():
        out += _s(k)
        if isinstance(v, np.ndarray):
            out += (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + _i(0) + b"\x85" + _s(b"b")
                    + b"\x87R(" + _i(1) + b"".join(_i(n) for n in v.shape) + {1: b"\x85", 2: b"\x86"}[v.ndim]
                    + b"cnumpy\ndtype\n" + _s(b"u1") + _i(0) + _i(1) + b"\x87R"
                    + b"(" + _i(3) + _s(b"|") + b"NNN" + _i(-1) + _i(-1) + _i(0) + b"tb"
                    + b"\x89" + _s(v.tobytes()) + b"tb")
        elif isinstance(v, list):
            out += b"](" + b"".join(_s(x) if isinstance(x, bytes) else _i(x) for x in v) + b"e"
        elif isinstance(v, bytes):
            out += _s(v)
        else:
            out += _i(v)
    return bytes(out + b"u.")


def python_batch(x: np.ndarray, y, label: bytes = b"training batch 1 of 2") -> bytes:
    return py2_pickle({b"batch_label": label, b"labels": [int(v) for v in y],
                       b"data": x.reshape(len(x), -1), b"filenames": [b"img_%d.png" % i for i in range(len(x))]})


def binary_batch(x: np.ndarray, y) -> bytes:
    return np.concatenate([np.asarray(y, np.uint8)[:, None], x.reshape(len(x), -1)], axis=1).tobytes()


def make_tgz(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


@dataclass
class Tiny:
    arrays: dict[str, np.ndarray]   # what every layout must decode to
    batches: dict[str, dict]        # "python"/"binary" -> file name -> bytes
    archives: dict[str, bytes]      # official archive name -> bytes
    spec: cifar.CifarSpec

    def write(self, where: Path, layout: str) -> Path:
        """Put the data in ``where`` as ``layout``: an archive name, or "python"/"binary" (the
        extracted cifar-10-batches-* folder). Returns the path written."""
        where.mkdir(parents=True, exist_ok=True)
        if layout in self.archives:
            (where / layout).write_bytes(self.archives[layout])
            return where / layout
        folder = where / (PYTHON_FOLDER if layout == "python" else BINARY_FOLDER)
        folder.mkdir(exist_ok=True)
        for name, data in self.batches[layout].items():
            (folder / name).write_bytes(data)
        return folder


def synthetic(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x_train": rng.integers(0, 256, (2 * N, 3, 32, 32), dtype=np.uint8),
            "y_train": (np.arange(2 * N) * 3 % 10).astype(np.uint8),
            "x_test": rng.integers(0, 256, (N, 3, 32, 32), dtype=np.uint8),
            "y_test": (np.arange(N) * 7 % 10).astype(np.uint8)}


def build_tiny(seed: int = 0) -> Tiny:
    a = synthetic(seed)
    parts = {"data_batch_1": (a["x_train"][:N], a["y_train"][:N]),
             "data_batch_2": (a["x_train"][N:], a["y_train"][N:]),
             "test_batch": (a["x_test"], a["y_test"])}
    py = {k: python_batch(x, y) for k, (x, y) in parts.items()}
    bn = {f"{k}.bin": binary_batch(x, y) for k, (x, y) in parts.items()}
    archives = {
        PYTHON_ARCHIVE: make_tgz([(f"{PYTHON_FOLDER}/batches.meta", py2_pickle({b"num_cases_per_batch": N}))]
                                 + [(f"{PYTHON_FOLDER}/{k}", v) for k, v in py.items()]),
        BINARY_ARCHIVE: make_tgz([(f"{BINARY_FOLDER}/batches.meta.txt", b"airplane\n")]
                                 + [(f"{BINARY_FOLDER}/{k}", v) for k, v in bn.items()]),
    }
    spec = replace(cifar.CIFAR10, train_batches=2, batch_size=N,
                   archive_md5={k: md5(v) for k, v in archives.items()},
                   archive_size={k: len(v) for k, v in archives.items()},
                   python_batch_md5={k: md5(v) for k, v in py.items()})
    return Tiny(a, {"python": py, "binary": bn}, archives, spec)


# ---------------------------------------------------------------------------------- fixtures
@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No network, no user cache, no user data dir."""
    calls = []

    def no_network(req, *a, **k):
        calls.append(getattr(req, "full_url", req))
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(sources, "urlopen", no_network)
    monkeypatch.delenv("FFLAB_DATA_DIR", raising=False)
    monkeypatch.setenv("FFLAB_CACHE_DIR", str(tmp_path / "cache"))
    return calls


@pytest.fixture
def tiny(monkeypatch) -> Tiny:
    t = build_tiny()
    monkeypatch.setattr(cifar, "CIFAR10", t.spec)
    return t


def assert_same(a, b):
    assert set(a) == set(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


LAYOUTS = [PYTHON_ARCHIVE, BINARY_ARCHIVE, "python", "binary"]


# ---------------------------------------------------------------------------------- happy paths
@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_official_layout_decodes_to_the_same_arrays(tmp_path, tiny, layout):
    tiny.write(tmp_path / "d", layout)
    got = fetch_cifar10(data_dir=tmp_path / "d")
    assert_same(got.arrays, tiny.arrays)
    assert got.source.startswith(f"data dir {tmp_path / 'd'} (data_dir / --data-dir)")
    assert got.cache_path == tmp_path / "cache" / "cifar10.npz"


def test_load_cifar10_tensors_then_cache(tmp_path, tiny, offline):
    tiny.write(tmp_path / "d", PYTHON_ARCHIVE)
    d = cifar.load_cifar10(data_dir=tmp_path / "d")
    assert set(d) == {"x_train", "y_train", "x_test", "y_test"}
    assert d["x_train"].shape == (2 * N, 3, 32, 32) and d["x_test"].shape == (N, 3, 32, 32)
    assert d["x_train"].dtype == torch.float32 and d["y_train"].dtype == torch.int64
    assert 0.0 <= float(d["x_train"].min()) and float(d["x_train"].max()) <= 1.0
    torch.testing.assert_close(d["x_test"], torch.from_numpy(tiny.arrays["x_test"]).float() / 255)
    assert d["y_train"].tolist() == tiny.arrays["y_train"].tolist()
    # A named data dir whose files did not change is served from the cache built from them ...
    again = fetch_cifar10(data_dir=tmp_path / "d")
    assert again.source.startswith("cache") and "unchanged" in again.source
    # ... and with no data dir named, the cache alone serves, without the network.
    plain = fetch_cifar10()
    assert plain.source.startswith("cache") and PYTHON_ARCHIVE in plain.origin
    assert_same(plain.arrays, tiny.arrays)
    assert offline == []


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("where", ["subdir", "env"])
def test_data_dir_subfolder_and_env(tmp_path, tiny, monkeypatch, layout, where):
    root = tmp_path / "root"
    tiny.write(root / "cifar10" if where == "subdir" else root, layout)
    if where == "env":
        monkeypatch.setenv("FFLAB_DATA_DIR", str(root))
        got = fetch_cifar10()
        assert "FFLAB_DATA_DIR" in got.source
    else:
        got = fetch_cifar10(data_dir=root)
    assert_same(got.arrays, tiny.arrays)


@pytest.mark.parametrize("fmt", ["python", "binary"])
def test_the_extracted_folder_itself_as_data_dir(tmp_path, tiny, fmt):
    folder = tiny.write(tmp_path, fmt)
    assert_same(fetch_cifar10(data_dir=folder).arrays, tiny.arrays)


@pytest.mark.parametrize("archive", [PYTHON_ARCHIVE, BINARY_ARCHIVE])
def test_the_archive_itself_as_data_dir(tmp_path, tiny, archive):
    path = tiny.write(tmp_path, archive)
    assert_same(fetch_cifar10(data_dir=path).arrays, tiny.arrays)


def test_archive_is_preferred_to_an_extracted_folder(tmp_path, tiny):
    tiny.write(tmp_path / "d", PYTHON_ARCHIVE)
    (tmp_path / "d" / PYTHON_FOLDER).mkdir()  # empty: would fail if it were used
    assert str(tmp_path / "d" / PYTHON_ARCHIVE) in fetch_cifar10(data_dir=tmp_path / "d").source


def test_batches_repickled_by_python3_numpy2_also_load(tmp_path, tiny):
    folder = tiny.write(tmp_path / "d", "python")
    for f in folder.iterdir():
        obj = pickle.loads(f.read_bytes(), encoding="bytes")
        f.write_bytes(pickle.dumps(obj, protocol=4))  # names numpy._core.multiarray, BINBYTES
    spec = replace(tiny.spec, python_batch_md5={})
    assert_same(fetch_cifar10(data_dir=tmp_path / "d", spec=spec).arrays, tiny.arrays)


# ---------------------------------------------------------------------------------- checks
def test_truncated_archive_names_file_and_md5s(tmp_path, tiny):
    blob = tiny.archives[PYTHON_ARCHIVE]
    (tmp_path / PYTHON_ARCHIVE).write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError) as e:
        fetch_cifar10(data_dir=tmp_path)
    msg = str(e.value)
    assert f"{tmp_path / PYTHON_ARCHIVE}: truncated: the gzip stream ends early" in msg
    assert f"file is {len(blob) // 2} bytes, the official archive {len(blob)} bytes" in msg
    assert f"MD5 expected {tiny.spec.archive_md5[PYTHON_ARCHIVE]}, found {md5(blob[: len(blob) // 2])}" in msg
    assert "A named data dir is used alone" in msg


def test_wrong_md5_of_a_well_formed_archive(tmp_path, tiny, monkeypatch):
    spec = replace(tiny.spec, archive_md5={BINARY_ARCHIVE: "0" * 32})
    monkeypatch.setattr(cifar, "CIFAR10", spec)
    tiny.write(tmp_path, BINARY_ARCHIVE)
    found = md5(tiny.archives[BINARY_ARCHIVE])
    with pytest.raises(DataError, match=f"{BINARY_ARCHIVE}: MD5 mismatch: expected {'0' * 32}, found "
                                        f"{found}; the file is corrupt or not the original {BINARY_ARCHIVE}"):
        cifar.load_cifar10(data_dir=tmp_path)


def test_not_a_gzip_file(tmp_path, tiny):
    (tmp_path / PYTHON_ARCHIVE).write_bytes(b"<!DOCTYPE html><html>Not Found</html>")
    with pytest.raises(DataError, match=r"not a gzip file \(starts with b'<!DOCTYPE html><'; file is 37 bytes"):
        fetch_cifar10(data_dir=tmp_path)


@pytest.mark.parametrize("bad", ["../evil.txt", "cifar-10-batches-py/../../evil.txt", "/tmp/evil.txt"])
def test_archive_member_escaping_its_folder_is_refused(tmp_path, tiny, monkeypatch, bad):
    blob = make_tgz([(f"{PYTHON_FOLDER}/{k}", v) for k, v in tiny.batches["python"].items()]
                    + [(bad, b"evil")])
    monkeypatch.setattr(cifar, "CIFAR10", replace(tiny.spec, archive_md5={PYTHON_ARCHIVE: md5(blob)}))
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / PYTHON_ARCHIVE).write_bytes(blob)
    with pytest.raises(DataError, match=f"{PYTHON_ARCHIVE}: refusing archive member with (an absolute path|"
                                        f"'..' in its path): '{bad}'"):
        fetch_cifar10(data_dir=tmp_path / "d")
    assert not (tmp_path / "evil.txt").exists()


def test_archive_lacking_a_batch(tmp_path, tiny, monkeypatch):
    blob = make_tgz([(f"{PYTHON_FOLDER}/{k}", v) for k, v in tiny.batches["python"].items()
                     if k != "data_batch_2"])
    (tmp_path / PYTHON_ARCHIVE).write_bytes(blob)
    with pytest.raises(DataError, match=f"archive lacks {PYTHON_FOLDER}/data_batch_2 .*; MD5 expected"):
        fetch_cifar10(data_dir=tmp_path)


@pytest.mark.parametrize("cut,what", [(5, "not a whole number of 3073-byte records"),
                                      (3073, "expected 7 records")])
def test_binary_batch_of_the_wrong_size(tmp_path, tiny, cut, what):
    folder = tiny.write(tmp_path, "binary")
    f = folder / "data_batch_2.bin"
    f.write_bytes(f.read_bytes()[:-cut])
    size = N * 3073 - cut
    with pytest.raises(DataError) as e:
        fetch_cifar10(data_dir=tmp_path)
    msg = str(e.value)
    assert msg.startswith(f"{f}: ") and what in msg
    assert f"{N * 3073} bytes" in msg and (f"{size} bytes" in msg)


@pytest.mark.parametrize("fmt", ["python", "binary"])
def test_label_out_of_range(tmp_path, tiny, fmt):
    y = tiny.arrays["y_test"].copy()
    y[3] = 10
    x = tiny.arrays["x_test"]
    folder = tiny.write(tmp_path, fmt)
    name = "test_batch" if fmt == "python" else "test_batch.bin"
    (folder / name).write_bytes(python_batch(x, y) if fmt == "python" else binary_batch(x, y))
    with pytest.raises(DataError, match=f"{name}: label 10 of image 3 is out of range 0..9"):
        fetch_cifar10(data_dir=tmp_path)


def test_wrong_image_count_in_a_python_batch(tmp_path, tiny):
    folder = tiny.write(tmp_path, "python")
    (folder / "data_batch_1").write_bytes(python_batch(tiny.arrays["x_train"][:6], tiny.arrays["y_train"][:6]))
    with pytest.raises(DataError, match="data_batch_1: expected 7 images in each batch file, found 6"):
        fetch_cifar10(data_dir=tmp_path)


def test_real_counts_are_50000_and_10000():
    assert cifar.CIFAR10.n_train == 50000 and cifar.CIFAR10.n_test == 10000
    assert cifar.CIFAR10.shape("x_train") == (50000, 3, 32, 32)
    assert cifar.CIFAR10.archive_md5 == {PYTHON_ARCHIVE: "c58f30108f718f92721af3b95e74349a",
                                         BINARY_ARCHIVE: "c32a1d4ab5d03f1284b67883e8d87530"}


def test_python_batch_md5_is_checked_after_the_format(tmp_path, tiny):
    folder = tiny.write(tmp_path, "python")
    x = tiny.arrays["x_test"].copy()
    x[0, 0, 0, 0] ^= 1  # well formed, but not the original file
    (folder / "test_batch").write_bytes(python_batch(x, tiny.arrays["y_test"]))
    with pytest.raises(DataError, match=f"test_batch: MD5 mismatch: expected "
                                        f"{tiny.spec.python_batch_md5['test_batch']}, found"):
        fetch_cifar10(data_dir=tmp_path)


def test_folder_lacking_a_batch_file(tmp_path, tiny):
    folder = tiny.write(tmp_path, "binary")
    (folder / "test_batch.bin").unlink()
    with pytest.raises(DataError, match=r"lacks test_batch\.bin \(an extracted cifar-10-binary\.tar\.gz has "):
        fetch_cifar10(data_dir=tmp_path)


def test_named_data_dir_without_cifar_files(tmp_path, tiny):
    (tmp_path / "d").mkdir()
    with pytest.raises(DataError) as e:
        fetch_cifar10(data_dir=tmp_path / "d")
    msg = str(e.value)
    assert "has no cifar10 files" in msg and "holds none of them" in msg
    assert f"looked for: {PYTHON_ARCHIVE}, {BINARY_ARCHIVE}, {PYTHON_FOLDER}/, {BINARY_FOLDER}/" in msg
    assert str(tmp_path / "d" / "cifar10") in msg
    with pytest.raises(DataError, match="does not exist"):
        fetch_cifar10(data_dir=tmp_path / "nowhere")


def test_named_data_dir_with_a_bad_file_never_falls_back(tmp_path, tiny, monkeypatch):
    tiny.write(tmp_path / "good", PYTHON_ARCHIVE)
    fetch_cifar10(data_dir=tmp_path / "good")  # a valid cache now exists
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / PYTHON_ARCHIVE).write_bytes(tiny.archives[PYTHON_ARCHIVE][:-100])
    monkeypatch.setenv("FFLAB_DATA_DIR", str(bad))
    with pytest.raises(DataError, match="truncated") as e:
        fetch_cifar10()
    assert "unset FFLAB_DATA_DIR" in str(e.value)


def test_file_damaged_after_caching_is_read_again(tmp_path, tiny):
    path = tiny.write(tmp_path, BINARY_ARCHIVE)
    fetch_cifar10(data_dir=tmp_path)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match="truncated"):
        fetch_cifar10(data_dir=tmp_path)


# ---------------------------------------------------------------------------------- unpickling
class _Evil:
    def __reduce__(self):
        return os.system, ("touch pwned",)


@pytest.mark.parametrize("payload", ["reduce", "in_labels"])
def test_hostile_pickle_is_refused_and_never_runs(tmp_path, tiny, monkeypatch, payload):
    monkeypatch.chdir(tmp_path)
    folder = tiny.write(tmp_path / "d", "python")
    obj = _Evil() if payload == "reduce" else {b"data": tiny.arrays["x_test"].reshape(N, -1),
                                               b"labels": [_Evil()] * N}
    # Protocol 2 as in the official files; 4 for the dict (protocol 2 writes Python 3 bytes by a call).
    (folder / "test_batch").write_bytes(pickle.dumps(obj, protocol=2 if payload == "reduce" else 4))
    with pytest.raises(DataError, match=r"test_batch: refusing to unpickle global (posix|nt)\.system"):
        fetch_cifar10(data_dir=tmp_path / "d")
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("global_", [b"cbuiltins\neval\n", b"cnumpy\nload\n", b"c__builtin__\ngetattr\n"])
def test_only_the_numpy_globals_of_the_official_files_are_allowed(global_):
    with pytest.raises(DataError, match="refusing to unpickle global"):
        cifar.safe_unpickle(b"\x80\x02" + global_ + b".", name="x")


def test_other_numpy_dtypes_are_refused(tiny):
    blob = python_batch(tiny.arrays["x_test"], tiny.arrays["y_test"]).replace(_s(b"u1"), _s(b"O8"))
    with pytest.raises(DataError, match="refusing to unpickle numpy dtype b'O8'"):
        cifar.decode_python_batch(blob, name="b", spec=tiny.spec)


@pytest.mark.parametrize("damage,what", [
    (lambda b: b[:-40], "not a readable pickle"),
    (lambda b: b + b"junk", "4 bytes of garbage after the pickle"),
    (lambda b: pickle.dumps([1, 2], protocol=2), "expected a pickled dict"),
    (lambda b: pickle.dumps({b"data": b"x"}, protocol=4), "no 'labels' entry"),
    (lambda b: pickle.dumps({b"data": np.zeros((7, 5), np.uint8), b"labels": [0] * 7}, protocol=4),
     r"'data' must be a uint8 array of shape \(n, 3072\), found uint8 \(7, 5\)"),
    (lambda b: pickle.dumps({b"data": np.zeros((7, 3072), np.uint8), b"labels": [0] * 6}, protocol=4),
     "7 images but 6 labels"),
])
def test_malformed_python_batches(tiny, damage, what):
    good = python_batch(tiny.arrays["x_test"], tiny.arrays["y_test"])
    with pytest.raises(DataError, match=f"^b: {what}"):
        cifar.decode_python_batch(damage(good), name="b", spec=tiny.spec)


# ---------------------------------------------------------------------------------- other sources
def test_no_source_fails_with_one_clear_error(tiny, offline):
    with pytest.raises(DataError) as e:
        cifar.load_cifar10()
    msg = str(e.value)
    assert "could not get cifar10; tried 3 sources:" in msg
    assert "1. data dir: not set (pass --data-dir DIR or set FFLAB_DATA_DIR)" in msg
    assert "cifar10.npz: cifar10.npz not built yet" in msg
    assert f"3. {tiny.spec.url}: {tiny.spec.url}: network disabled in tests" in msg
    assert f"Fix: download {PYTHON_ARCHIVE} (or {BINARY_ARCHIVE}) from https://www.cs.toronto.edu/" in msg
    assert offline == ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"]


def test_download_false_skips_the_network(tiny, offline):
    with pytest.raises(DataError, match="skipped: download=False"):
        fetch_cifar10(download=False)
    assert offline == []


class _Resp(io.BytesIO):
    def __init__(self, body):
        super().__init__(body)
        self.headers = {"Content-Length": str(len(body))}


@pytest.fixture
def serve(monkeypatch):
    """Serve the bytes put in the returned dict as the official python archive."""
    served, asked = {}, []

    def fake_urlopen(req, timeout):
        asked.append(req.full_url)
        assert timeout <= 30
        return _Resp(served["body"])

    monkeypatch.setattr(sources, "urlopen", fake_urlopen)
    served["asked"] = asked
    return served


def test_download_then_cache(tiny, serve, capsys):
    serve["body"] = tiny.archives[PYTHON_ARCHIVE]
    got = fetch_cifar10()
    assert got.source == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert_same(got.arrays, tiny.arrays)
    assert "downloading cifar10" in capsys.readouterr().err
    assert fetch_cifar10().source.startswith("cache")
    assert serve["asked"] == [tiny.spec.url]


def test_corrupt_download_is_an_error(tiny, serve):
    serve["body"] = tiny.archives[PYTHON_ARCHIVE][:-64]
    with pytest.raises(DataError, match=r"cifar-10-python\.tar\.gz: .*truncated"):
        fetch_cifar10()


def test_corrupt_cache_is_reported_and_rebuilt(tmp_path, tiny, serve):
    cache_file = tmp_path / "cache" / "cifar10.npz"
    cache_file.parent.mkdir()
    cache_file.write_bytes(b"PK\x03\x04 half a zip")
    serve["body"] = tiny.archives[PYTHON_ARCHIVE]
    with pytest.warns(RuntimeWarning, match=r"ignored files that failed a check:\n  cache .*cifar10\.npz"):
        got = fetch_cifar10()
    assert got.source.startswith("https://")
    assert_same(cifar.load_cache(tiny.spec, cache_file)[0], tiny.arrays)


def test_tampered_cache_is_not_trusted(tmp_path, tiny):
    tiny.write(tmp_path / "d", "binary")
    path = fetch_cifar10(data_dir=tmp_path / "d").cache_path
    arrays, meta = cifar.load_arrays(path)
    arrays["y_test"] = arrays["y_test"].copy()
    arrays["y_test"][0] = (arrays["y_test"][0] + 1) % 10
    cache_mod.save_arrays(path, arrays, meta)
    with pytest.raises(DataError, match="y_test sha256 mismatch"):
        cifar.load_cache(tiny.spec, path)
    assert_same(fetch_cifar10(data_dir=tmp_path / "d").arrays, tiny.arrays)  # rebuilt from the files
