"""Linear readout fitted after FF training, on frozen features (paper section 3.2).

The paper evaluates unsupervised FF with "a linear classifier on the normalized activity vectors
of the last three hidden layers". Our training recipe fits that classifier alongside the FF layers
(``experiments/unsupervised.py``), with plain Adam and no regularization, and on MNIST it overfits: train error
near 0% while test error stays flat. This module fits the readout again, once the FF net is frozen:

1. features: the normalized activities of the chosen hidden layers for every training and test
   image (one forward pass; the FF weights never change, no gradient exists to reach them);
2. a multinomial logistic regression with an L2 penalty ``weight_decay/2 * |W|^2``, solved to
   convergence by full-batch L-BFGS (deterministic: no learning rate, batch order or seed);
3. the penalty chosen on a validation split held out from the *training* set (the test set is
   used once, for the final number), then the readout refitted on the whole training set.

``fflab readout RUN_DIR`` runs this on a finished unsupervised run and writes ``readout.json``.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from . import runs
from .errors import CheckpointError, ConfigError
from .nets import FFNet
from .runtime import Runtime

__all__ = ["extract_features", "fit_logistic", "ReadoutResult", "frozen_readout"]


@torch.no_grad()
def extract_features(net: FFNet, x: torch.Tensor, layers: Sequence[int], *, chunk: int = 1000,
                     rt: Runtime | None = None) -> torch.Tensor:
    """Normalized activities of ``layers`` for images x (N, ...): (N, sum of the layers' widths), fp32."""
    from .experiments.unsupervised import forward_chunks
    net.eval()
    return torch.cat([net.features(hs, layers).float() for hs in forward_chunks(net, x, chunk=chunk, rt=rt)])


def fit_logistic(f: torch.Tensor, y: torch.Tensor, *, weight_decay: float, num_classes: int = 10,
                 max_iter: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression ``softmax(f W^T + b)`` minimizing mean cross-entropy plus
    ``weight_decay/2 * |W|^2`` (bias unpenalized), by full-batch L-BFGS from zero. Returns (W, b)."""
    if f.ndim != 2 or y.shape != (f.shape[0],):
        raise ValueError(f"features must be (N, D) and labels (N,); got {tuple(f.shape)} and {tuple(y.shape)}")
    w = torch.zeros(num_classes, f.shape[1], dtype=f.dtype, device=f.device, requires_grad=True)
    b = torch.zeros(num_classes, dtype=f.dtype, device=f.device, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20,
                            tolerance_grad=1e-6, tolerance_change=1e-9, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(torch.addmm(b, f, w.t()), y) + 0.5 * weight_decay * w.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def _error(f: torch.Tensor, y: torch.Tensor, wb: tuple[torch.Tensor, torch.Tensor]) -> float:
    w, b = wb
    return (torch.addmm(b, f, w.t()).argmax(1) != y).float().mean().item()


@dataclass
class ReadoutResult:
    layers: list[int]
    weight_decay: float                    # the one chosen on the validation split
    val_errors: dict[str, float]           # weight decay (as text) -> validation error
    train_error: float                     # refit on the whole training set
    test_error: float
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def frozen_readout(f_train: torch.Tensor, y_train: torch.Tensor, f_test: torch.Tensor, y_test: torch.Tensor,
                   *, weight_decays: Sequence[float], val_size: int, layers: Sequence[int] = (),
                   max_iter: int = 300) -> ReadoutResult:
    """Choose the L2 penalty on the last ``val_size`` training cases, refit on all, test once."""
    if not weight_decays or any(wd < 0 for wd in weight_decays):
        raise ConfigError(f"weight decays must be a non-empty list of values >= 0; got {list(weight_decays)}")
    if not 0 < val_size < f_train.shape[0]:
        raise ConfigError(f"val_size={val_size} must be between 1 and the training-set size - 1 "
                          f"({f_train.shape[0] - 1})")
    t0 = time.perf_counter()
    n = f_train.shape[0] - val_size
    val_errors = {}
    for wd in weight_decays:
        wb = fit_logistic(f_train[:n], y_train[:n], weight_decay=wd, max_iter=max_iter)
        val_errors[repr(float(wd))] = _error(f_train[n:], y_train[n:], wb)
    # lowest validation error; ties go to the larger penalty (the simpler model)
    best = min(weight_decays, key=lambda wd: (val_errors[repr(float(wd))], -wd))
    wb = fit_logistic(f_train, y_train, weight_decay=best, max_iter=max_iter)
    return ReadoutResult(layers=list(layers), weight_decay=float(best), val_errors=val_errors,
                         train_error=_error(f_train, y_train, wb), test_error=_error(f_test, y_test, wb),
                         seconds=time.perf_counter() - t0)


def readout_run(run_dir: str, *, layers: Sequence[int] | None = None, weight_decays: Sequence[float],
                val_size: int = 5000, max_iter: int = 300, data_dir: str | None = None,
                device: str | None = None) -> ReadoutResult:
    """Frozen readout for a finished unsupervised FF run folder; writes ``readout.json`` there
    (a list: one entry per layer set, replaced when the same set is fitted again). ``device``:
    where to run (None: the run's own device)."""
    from .experiments import read_config
    from .experiments.unsupervised import UnsupervisedFFConfig, _check_layers
    from .train import load_data, load_run

    cfg, _ = read_config(run_dir)
    if not isinstance(cfg, UnsupervisedFFConfig):
        raise ConfigError(f"{run_dir} is a {type(cfg).__name__} run; the frozen readout is for "
                          "unsupervised FF runs (UnsupervisedFFConfig)")
    cfg, task, rt = load_run(run_dir, device)
    net: FFNet = task.modules["net"]
    layers = _check_layers("layers", tuple(cfg.readout_layers if layers is None else layers), len(net.layers))
    data, _ = load_data(cfg, rt.device, data_dir)
    feats = {s: extract_features(net, data[f"x_{s}"], layers, rt=rt) for s in ("train", "test")}
    res = frozen_readout(feats["train"], data["y_train"], feats["test"], data["y_test"],
                         weight_decays=weight_decays, val_size=val_size, layers=layers, max_iter=max_iter)
    path = Path(run_dir) / "readout.json"
    old = runs.read_json(path) if path.exists() else []
    if not isinstance(old, list) or not all(isinstance(e, dict) for e in old):
        raise CheckpointError(f"{path} is not a list of readout entries; move it away to refit")
    entries = [e for e in old if e.get("layers") != res.layers] + [res.as_dict()]
    runs.write_json(path, entries)
    return res
