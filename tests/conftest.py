import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_MNIST = Path(os.environ.get("FFLAB_TEST_MNIST_DIR", REPO.parent / "shared" / "data" / "mnist"))


def pytest_collection_modifyitems(config, items):
    """Skip tests marked ``needs_cxx_compiler`` where inductor cannot build its CPU kernels."""
    from fflab._engines.compiled import has_cxx_compiler
    if has_cxx_compiler():
        return
    skip = pytest.mark.skip(reason="torch.compile on CPU needs a C++ compiler")
    for item in items:
        if "needs_cxx_compiler" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _isolate(tmp_path, monkeypatch):
    # Tests never write into the user's cache and run on one thread (deterministic, no contention).
    monkeypatch.setenv("FFLAB_CACHE_DIR", str(tmp_path / "cache"))
    torch.set_num_threads(1)


@pytest.fixture
def mnist_dir():
    if not (SHARED_MNIST / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"MNIST mirror not found at {SHARED_MNIST} (set FFLAB_TEST_MNIST_DIR)")
    return SHARED_MNIST


@pytest.fixture
def tiny_mnist(monkeypatch):
    """Synthetic MNIST-shaped data: load_mnist is replaced, so training tests need no files."""
    g = torch.Generator().manual_seed(0)
    # Sparse binary prototypes, like MNIST's mostly-black images, so the 10 label pixels matter.
    protos = (torch.rand(10, 784, generator=g) > 0.85).float()

    def make(n):
        y = torch.arange(n) % 10
        x = protos[y] * (torch.rand(n, 784, generator=g) > 0.2)  # drop 20% of the pixels
        return x, y

    x_tr, y_tr = make(600)
    x_te, y_te = make(200)
    data = {"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te}

    def fake_load(name="mnist", *, data_dir=None, download=True):
        return {k: v.clone() for k, v in data.items()}

    import fflab.data
    monkeypatch.setattr(fflab.data, "load_mnist", fake_load)
    return data
