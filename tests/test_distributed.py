"""Data-parallel supervised FF over 2 gloo processes on the CPU: the same updates as one process."""
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from fflab.errors import ConfigError
from fflab.experiments.supervised import SupervisedFFConfig

QUIET = dict(progress=False, log=lambda s: None)


def _data():
    g = torch.Generator().manual_seed(0)
    protos = (torch.rand(10, 784, generator=g) > 0.85).float()
    y = torch.arange(240) % 10
    x = protos[y] * (torch.rand(240, 784, generator=g) > 0.2)
    return x[:200], y[:200], x[200:], y[200:]


def _cfg(**kw):
    base = dict(hidden=(16, 16), epochs=2, batch_size=20, threads=1, train_eval_size=40, peer_norm=0.03,
                neutral_every=2, jitter=1, device="cpu")
    return SupervisedFFConfig(**{**base, **kw})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str, kw: dict) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    import torch.distributed as dist

    from fflab.train import fit
    torch.set_num_threads(1)
    try:
        fit(_cfg(**kw), out, data=_data(), **QUIET)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.mark.parametrize("kw", [dict(engine="shared", optimizer="sgd", lr=0.05, head_lr=0.1),
                                dict(engine="autograd", optimizer="sgd", lr=0.05), dict(engine="shared")])
def test_two_processes_make_the_updates_of_one(tmp_path, kw):
    """Same seed and global batch (jitter, hard negatives from cached probabilities, peer
    normalization): the same weights as one process, up to rounding."""
    from fflab.train import fit
    one = fit(_cfg(**kw), str(tmp_path / "one"), data=_data(), **QUIET)
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "two"), kw), nprocs=2, join=True)
    a = load_file(str(tmp_path / "one" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        # Adam divides by the root of the squared gradient: where the head's gradient is near 0
        # (its bias), rounding differences come out at the size of the learning rate
        tol = dict(rtol=0, atol=1e-3) if k.startswith("head") and kw.get("optimizer") != "sgd" else {}
        torch.testing.assert_close(b[k], a[k], **(tol or dict(rtol=1e-4, atol=1e-5)), msg=k)
    import json
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert two["train_loss"] == pytest.approx(one["train_loss"], rel=1e-4)
    # the weights agree to rounding; a barely trained net's argmax may flip for one image of 40
    assert two["test_error_goodness"] == pytest.approx(one["test_error_goodness"], abs=1 / 40 + 1e-6)
    env = json.loads((tmp_path / "two" / "env.json").read_text())
    assert (env["world_size"], env["backend"], env["parallel"]) == (2, "gloo", "data")


def test_bad_setups_fail_clearly(monkeypatch, tmp_path):
    from fflab.distributed import Parallel, check_batch, from_environment
    with pytest.raises(ConfigError, match="batch_size=25 does not split over 2 processes"):
        check_batch(25, Parallel(0, 2, "gloo", "data"))
    monkeypatch.setenv("WORLD_SIZE", "2")
    for k in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(ConfigError, match="RANK, MASTER_ADDR, MASTER_PORT not set: launch with torchrun"):
        from_environment(torch.device("cpu"))


def _worker_cfg(rank: int, world: int, port: int, out: str, cfg) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    import torch.distributed as dist

    from fflab.train import fit
    torch.set_num_threads(1)
    try:
        fit(cfg, out, data=_data(), **QUIET)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_other_kinds_train_data_parallel(tmp_path):
    """A kind without its own sharding gets each rank's share from the loop and its gradients
    averaged before each optimizer step: the backprop MLP (no random draws) makes the updates of
    one process; unsupervised FF (hybrid negatives drawn per rank, peer means averaged) trains
    and writes one run folder."""
    import json

    from fflab.experiments.backprop import BPConfig
    from fflab.experiments.unsupervised import UnsupervisedFFConfig
    from fflab.train import fit
    bp = BPConfig(hidden=(16,), epochs=2, batch_size=20, threads=1, train_eval_size=40, device="cpu",
                  optimizer="sgd", lr=0.05)
    fit(bp, str(tmp_path / "bp1"), data=_data(), **QUIET)
    mp.spawn(_worker_cfg, args=(2, _free_port(), str(tmp_path / "bp2"), bp), nprocs=2, join=True)
    a = load_file(str(tmp_path / "bp1" / "model.safetensors"))
    b = load_file(str(tmp_path / "bp2" / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)
    uns = UnsupervisedFFConfig(hidden=(16, 16), readout_layers=(1,), epochs=1, batch_size=20, threads=1,
                               train_eval_size=40, peer_norm=0.03, device="cpu")
    mp.spawn(_worker_cfg, args=(2, _free_port(), str(tmp_path / "uns2"), uns), nprocs=2, join=True)
    env = json.loads((tmp_path / "uns2" / "env.json").read_text())
    assert (env["world_size"], env["parallel"]) == (2, "data")
    assert json.loads((tmp_path / "uns2" / "metrics.jsonl").read_text().splitlines()[-1])["sent_mb_per_step"] > 0


def test_pipeline_is_supervised_only(tmp_path):
    from fflab.experiments.backprop import BPConfig
    bp = BPConfig(hidden=(16,), epochs=1, batch_size=20, threads=1, device="cpu", parallel="pipeline")
    with pytest.raises(mp.ProcessRaisedException, match="BPConfig runs do not train on several processes with "
                                                        "parallel=pipeline"):
        mp.spawn(_worker_cfg, args=(2, _free_port(), str(tmp_path / "p"), bp), nprocs=2, join=True)
