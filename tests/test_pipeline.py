"""Layer-pipelined supervised FF (parallel=pipeline) over gloo processes on the CPU."""
import json

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from fflab.distributed import from_environment
from fflab.errors import ConfigError
from fflab.pipeline import split_layers
from test_distributed import QUIET, _cfg, _data, _free_port, _worker


def test_layers_split_into_contiguous_even_blocks():
    assert split_layers(3, 2) == [range(0, 2), range(2, 3)]      # the demo: 2 + 1
    assert split_layers(4, 2) == [range(0, 2), range(2, 4)]
    assert split_layers(4, 3) == [range(0, 2), range(2, 3), range(3, 4)]
    assert split_layers(2, 1) == [range(0, 2)]
    with pytest.raises(ConfigError, match="over 3 processes needs at least 3 hidden layers; this net has 2"):
        split_layers(2, 3)


def test_unknown_parallel_mode_is_an_error():
    with pytest.raises(ConfigError, match="parallel='tensor': choose one of auto, data, pipeline"):
        from_environment(torch.device("cpu"), "tensor")


@pytest.mark.parametrize("kw", [dict(optimizer="sgd", lr=0.05, head_lr=0.1), dict()])
def test_zero_lag_pipeline_makes_the_updates_of_one_process(tmp_path, kw):
    """With lag 0 the stages take turns: the same weights as one process (jitter, hard negatives
    from cached probabilities, peer normalization), up to rounding."""
    from fflab.train import fit
    kw = dict(hidden=(16, 16, 16), **kw)
    one = fit(_cfg(**kw), str(tmp_path / "one"), data=_data(), **QUIET)
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "two"), dict(kw, parallel="pipeline", pipeline_lag=0)),
             nprocs=2, join=True)
    a = load_file(str(tmp_path / "one" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        # Adam divides by the root of the squared gradient: where the head's gradient is near 0
        # (its bias), rounding differences come out at the size of the learning rate
        tol = dict(rtol=0, atol=1e-3) if k.startswith("head") and "optimizer" not in kw else {}
        torch.testing.assert_close(b[k], a[k], **(tol or dict(rtol=1e-4, atol=1e-5)), msg=k)
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert two["train_loss"] == pytest.approx(one["train_loss"], rel=1e-4)   # the stages' losses summed
    env = json.loads((tmp_path / "two" / "env.json").read_text())
    assert (env["world_size"], env["backend"], env["parallel"]) == (2, "gloo", "pipeline")


def test_lagged_three_stage_pipeline_writes_one_whole_run(tmp_path):
    """Three stages, one layer each, the neutral pass two steps ahead: rank 0's checkpoint holds
    every stage's trained layers (evaluating it alone gives the job's reported errors), and the
    metrics record what was sent."""
    from fflab.train import evaluate_run
    out = tmp_path / "three"
    mp.spawn(_worker, args=(3, _free_port(), str(out), dict(hidden=(16, 16, 16), parallel="pipeline")),
             nprocs=3, join=True)
    results = json.loads((out / "results.json").read_text())
    assert "lag 2" in results["parallel"]
    lines = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2]
    # per step: up, 2 x (batch 20 x 16) pos/neg + neutral activities (+ head features); down, probabilities
    assert all(0.001 < m["sent_mb_per_step"] < 0.1 for m in lines)
    weights = load_file(str(out / "model.safetensors"))
    # the last stage's layer (its running peer mean starts at 0.5) and head (at 0) came back to rank 0
    assert not torch.equal(weights["net.layers.2.peer_mean"], torch.full((16,), 0.5))
    assert weights["head.linear.weight"].abs().sum() > 0
    again = evaluate_run(str(out), data=_data())
    for k, v in again.items():
        assert results[f"test_{k}"] == pytest.approx(v, abs=1e-6), k
