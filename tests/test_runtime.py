"""fflab.runtime: device and dtype resolved once, and denormals flushed during runs."""
import json

import pytest
import torch

from fflab import runtime
from fflab.experiments.supervised import SupervisedFFConfig
from fflab.train import fit

TINY = torch.finfo(torch.float32).tiny


def _denormal_survives() -> bool:
    return torch.tensor([TINY]).mul(0.25).item() != 0.0    # TINY / 4 is denormal


@pytest.mark.skipif(not torch.set_flush_denormal(False), reason="this CPU cannot flush denormals")
def test_flush_denormals_turns_the_mode_on_and_restores_the_callers():
    assert _denormal_survives() and not runtime.denormals_flushed()
    with runtime.flush_denormals() as on:
        assert on and runtime.denormals_flushed() and not _denormal_survives()
        with runtime.flush_denormals(False) as inner:      # nested: off inside, on again after
            assert not inner and _denormal_survives()
        assert not _denormal_survives()
    assert _denormal_survives()                             # the caller's mode (off) is back
    torch.set_flush_denormal(True)                          # a caller that had it on keeps it on
    try:
        with runtime.flush_denormals(False):
            assert _denormal_survives()
        assert not _denormal_survives()
    finally:
        torch.set_flush_denormal(False)


@pytest.mark.skipif(not torch.set_flush_denormal(False), reason="this CPU cannot flush denormals")
def test_a_run_flushes_denormals_and_records_it(tmp_path, tiny_mnist):
    seen = []
    cfg = SupervisedFFConfig(hidden=(8, 8), epochs=1, threads=1, train_eval_size=100)
    fit(cfg, str(tmp_path / "r"), progress=False, log=lambda s: seen.append(runtime.denormals_flushed()))
    assert seen and all(seen)                                # on while the run logs its epochs
    assert json.loads((tmp_path / "r" / "env.json").read_text())["denormals_flushed"] is True
    assert not runtime.denormals_flushed()                   # and off again for the caller


def test_resolve_gives_one_runtime_with_the_concrete_dtype(monkeypatch):
    from fflab._engines import products
    monkeypatch.setattr(products, "native_bf16", lambda device: True)
    rt = runtime.resolve(SupervisedFFConfig(dtype="auto", device="cpu"), set_threads=False)
    assert (rt.device.type, rt.dtype, rt.product_dtype) == ("cpu", "bfloat16", torch.bfloat16)
    monkeypatch.setattr(products, "native_bf16", lambda device: False)
    rt = runtime.resolve(SupervisedFFConfig(dtype="auto", device="cpu"), set_threads=False)
    assert (rt.dtype, rt.product_dtype) == ("float32", None)
