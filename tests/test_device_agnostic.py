"""The training steps run unchanged on a device that is not the CPU, with no host read per step
(the engines must run unchanged on CUDA without the tests needing a GPU).

No GPU is needed: every step runs on PyTorch's ``meta`` device, whose tensors have shapes,
dtypes and a device but no data. On it, the two mistakes that break a CUDA run, or slow it with
a host-device sync on every step, fail at once instead of passing silently on a CPU:

- a tensor made without ``device=`` (it lands on the CPU, and the next op that mixes it with the
  batch raises "... is not on the expected device meta");
- a host read of a tensor's value (``.item()``, ``int(t)``, ``bool(t)``, ``.tolist()``, a
  boolean mask): "Tensor.item() cannot be called on meta tensors".

On a CPU, in contrast, both are legal and cost nothing that a test would see. The meta device
also takes the paths a GPU takes where the code branches on the device: the forward products
through ``torch.addmm`` instead of oneDNN (``fflab.products``), torch's own optimizer steps.

What this cannot see: numbers (meta has none), and code that only runs where the device is
``cuda`` by name. So where a GPU is present (``benchmarks/gpu_run.sh`` runs this file there)
every test also runs on it, for real, with generators, autocast and jitter, and checks that the
losses are finite. Three things cannot run on meta at all and are left out: ``torch.compile``
(inductor generates no meta kernels), ``torch.autocast`` (no meta autocast: the bf16 paths that
use it, i.e. all but the shared engine's explicit casts, run here in fp32), and generators (meta
random ops take none: the steps get ``generator=None``, so jitter, which needs one, is off).
"""
from __future__ import annotations

import dataclasses

import pytest
import torch

from fflab.experiments.supervised import SupervisedFFConfig
from fflab.experiments.supervised import predict as ff_predict
from fflab.recipes import all_recipes
from fflab.train import build_task

META = torch.device("meta")
DEVICES = [META, *([torch.device("cuda")] if torch.cuda.is_available() else [])]
BATCH = 8


def _mnist_like(n: int, device: torch.device) -> dict[str, torch.Tensor]:
    x = torch.rand(n, 784, device=device)
    y = torch.randint(0, 10, (n,), device=device)
    return {"x_train": x, "y_train": y, "x_test": x[:4], "y_test": y[:4]}


def _aesop_like(n: int, device: torch.device) -> dict[str, torch.Tensor]:
    x = torch.randint(0, 30, (n, 100), device=device)
    y = torch.zeros(n, dtype=torch.long, device=device)
    return {"x_train": x, "y_train": y, "x_test": x[:4], "y_test": y[:4]}


def _ready(cfg, device: torch.device):
    """``cfg`` without compile (``benchmarks/gpu_check.py`` covers it) and, on meta, without what
    meta cannot run (module docstring): bf16 autocast (the shared engine's bf16 is explicit casts
    and stays) and jitter."""
    off = {"compile": "false"}
    if device == META:
        off["jitter"] = 0
        if getattr(cfg, "dtype", "float32") == "bfloat16" and getattr(cfg, "engine", None) != "shared":
            off["dtype"] = "float32"
    return dataclasses.replace(cfg, **{k: v for k, v in off.items() if hasattr(cfg, k)})


def _steps_on(device: torch.device, cfg, data: dict[str, torch.Tensor], steps: int = 3):
    task = build_task(cfg, device)
    if "clock" in task.modules and device == META:
        # The sequence task reads its update counter from the host once per process, on its
        # first step (sequences.py: the epoch of an update follows from it); a CPU counter
        # keeps that one read possible here. Every later step must not read it again.
        task.modules["clock"].updates = torch.zeros((), dtype=torch.long)
    if task.setup is not None:
        task.setup(data)
    task.train(True)
    x, y = data["x_train"][:BATCH], data["y_train"][:BATCH]
    idx = torch.arange(BATCH, device=device)
    g = None if device == META else torch.Generator(device=device).manual_seed(0)
    for _ in range(steps):
        loss = task.step(x, y, g, idx)
    assert loss.device == device
    if device != META:
        assert torch.isfinite(loss), loss
    return task, loss


def _assert_all_on(device: torch.device, task) -> None:
    def same(t: torch.Tensor) -> bool:   # cuda and cuda:0 are one device
        return t.device.type == device.type

    for name, module in task.modules.items():
        for pname, t in [*module.named_parameters(), *module.named_buffers()]:
            if name == "clock" and device == META:
                continue
            assert same(t), f"{name}.{pname} left the device: {t.device}"
            if isinstance(t, torch.nn.Parameter) and t.grad is not None:
                assert same(t.grad), f"{name}.{pname}.grad is on {t.grad.device}"
    for name, opt in task.optimizers.items():
        for state in opt.state.values():
            for key, v in state.items():
                # torch keeps Adam's step count on the CPU unless the step is fused or capturable
                if torch.is_tensor(v) and key != "step":
                    assert same(v), f"optimizer {name} state {key!r} is on {v.device}"


def test_meta_catches_what_it_is_here_for():
    """The two mistakes of the module docstring fail on meta (and pass on a CPU)."""
    x = torch.ones(4, device=META)
    with pytest.raises(RuntimeError, match="meta"):
        x + torch.ones(4)                       # a tensor made without device=
    with pytest.raises(RuntimeError):
        x.sum().item()                          # a host read
    with pytest.raises(RuntimeError):
        bool(x.sum() > 0)


SUPERVISED = [
    dict(engine="shared", optimizer="adam"),
    dict(engine="shared", optimizer="sgd"),               # fp32 SGD: update.ProductSGD
    dict(engine="shared", optimizer="adam", dtype="bfloat16"),
    dict(engine="shared", optimizer="sgd", dtype="bfloat16"),
    dict(engine="shared", optimizer="adam", neutral_every=4),
    dict(engine="shared", optimizer="adam", peer_norm=0.03, negatives="uniform"),
    dict(engine="analytic", optimizer="adam"),
    dict(engine="analytic", optimizer="sgd", neutral_every=4, peer_norm=0.03),
    dict(engine="autograd", optimizer="adam"),
    dict(engine="autograd", optimizer="sgd", goodness="min_ssq"),
]


@pytest.mark.parametrize("device", DEVICES, ids=str)
@pytest.mark.parametrize("over", SUPERVISED, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_supervised_step_is_device_clean(over, device):
    cfg = SupervisedFFConfig(hidden=(32, 32, 32), batch_size=BATCH, device="cpu", **over)
    task, loss = _steps_on(device, cfg, _mnist_like(64, device))
    assert loss.shape == ()
    _assert_all_on(device, task)


@pytest.mark.parametrize("device", DEVICES, ids=str)
@pytest.mark.parametrize("per_label_fused", [True, False])
def test_supervised_predictions_are_device_clean(per_label_fused, device):
    """Per-label goodness (shared first-layer image product, or one pass per label) and the
    one-pass head: predictions stay on the device until the caller reads the error rate."""
    cfg = SupervisedFFConfig(hidden=(32, 32), batch_size=BATCH, device="cpu")
    task = build_task(cfg, device)
    task.train(False)
    preds = ff_predict(task.modules["net"], task.modules["head"], _mnist_like(16, device)["x_train"],
                       layers=list(range(cfg.eval_from_layer, 2)),
                       per_label=True, chunk=8, shared=per_label_fused)
    assert set(preds) == {"goodness", "onepass"}
    assert all(p.device.type == device.type and p.shape == (16,) for p in preds.values())


# Recipes that train through the loop (fast-learning has no training step).
RECIPES = sorted(n for n, r in all_recipes().items() if type(r.config()).__name__ != "FastLearningConfig")


@pytest.mark.parametrize("device", DEVICES, ids=str)
@pytest.mark.parametrize("name", RECIPES)
def test_every_recipes_step_is_device_clean(name, device):
    """Each recipe's own (quick) configuration (on meta, with what meta cannot run switched off)."""
    cfg = _ready(all_recipes()[name].make(True), device)
    data = (_aesop_like(BATCH, device) if getattr(cfg, "dataset", "mnist") == "aesop"
            else _mnist_like(64, device))
    task, _ = _steps_on(device, cfg, data)
    _assert_all_on(device, task)


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_compiled_update_makes_its_scalars_on_the_device(name):
    """``update.CompiledUpdate`` (compile=true with bf16) outside its compiled loop, which meta
    cannot run (recorded instead): the learning rate and Adam's bias corrections, made from the
    step counts where they live, with no host read, on the parameters' device."""
    from fflab._engines.update import CompiledUpdate
    params = [torch.nn.Parameter(torch.zeros(6, 5, device=META)), torch.nn.Parameter(torch.zeros(6, device=META))]
    opt = (torch.optim.Adam(params, lr=1e-3) if name == "adam"
           else torch.optim.SGD(params, lr=1e-2, momentum=0.9, dampening=0.9))
    for p in params:   # as after torch's first step, which CompiledUpdate leaves to torch
        opt.state[p] = ({"step": torch.tensor(1.0, device=META), "exp_avg": torch.zeros_like(p),
                         "exp_avg_sq": torch.zeros_like(p)} if name == "adam"
                        else {"momentum_buffer": torch.zeros_like(p)})
    update = CompiledUpdate(opt, copied=params[:1], dtype=torch.bfloat16)
    calls = []
    update._compiled = lambda *args, **kwargs: calls.append(args)
    update.step([torch.zeros(6, 5, dtype=torch.bfloat16, device=META), torch.zeros(6, device=META)])
    (args,) = calls
    scalars = args[-2:] if name == "adam" else args[-1:]
    assert all(s.device == META and s.dtype == torch.float32 for s in scalars)
    assert all(c.device == META for c in update.weights())
