"""The training loop, run reload and evaluation (no argparse, no plotting).

One epoch loop (``fit``) drives every kind of run. What a kind trains and how is its ``Task``
(``fflab.task``), built by ``fflab.experiments.KINDS``; the runtime (device, dtype, threads) is
resolved once per run (``fflab.runtime``) and handed to the builder.
"""
from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from . import config, distributed, experiments, inputs, runs, runtime
from .errors import CheckpointError, ConfigError, TrainingDiverged
from .experiments import load_data
from .optim import lr_factor
from .runtime import Runtime
from .task import MNIST_SHAPE, DataShape, Task, epoch_generator

DATA_FILE = "data.json"     # a run folder's record of its data's image shape and class count
IN_MEMORY = "in-memory"     # the dataset name of a run trained with fit(data=...)

# An epoch's mean training loss this many times the run's first step's is divergence, even while
# finite (``lr=1e9`` sends the demo's loss to 4e25 without an inf).
DIVERGED_FACTOR = 1e6


def build_task(cfg: Any, rt: Runtime | torch.device | str, shape: DataShape | None = None) -> Task:
    """The ``Task`` of ``cfg`` on runtime ``rt`` (a bare device means fp32 there) for data of
    ``shape`` (None: MNIST's), with the model initialized from ``cfg.seed``."""
    kind = experiments.kind_of(cfg)
    if kind.build is None:
        raise ConfigError(f"{type(cfg).__name__} runs have no training task (fflab train runs them)")
    if not isinstance(rt, Runtime):
        rt = runtime.resolve(cfg, device=rt if isinstance(rt, torch.device) else rt, set_threads=False)
    torch.manual_seed(cfg.seed)  # model initialization
    try:
        return kind.build(cfg, rt, shape or MNIST_SHAPE)
    except ValueError as e:
        if isinstance(e, ConfigError):
            raise
        # The layers and torch's optimizers check their arguments with ValueError (an unknown
        # goodness, a block size that does not divide a layer): here those arguments are config
        # keys, so it is the config's error, one line at the command line.
        raise ConfigError(f"{type(cfg).__name__}: {e}") from e


def fit(cfg: Any, out: str, *, data: Mapping[str, Any] | Sequence[Any] | None = None,
        recipe: str | None = None, resume: bool = False, data_dir: str | None = None, progress: bool = True,
        log: Callable[[str], None] = print, stop_after_epoch: int | None = None) -> dict[str, Any]:
    """Train ``cfg`` into run folder ``out`` (or continue it with ``resume=True``); return results.

    ``data``: the arrays to train on (``x_train, y_train, x_test, y_test``, a dict or a 4-tuple of
    tensors or numpy arrays; ``fflab.inputs.prepare`` says what it accepts) instead of
    ``cfg.dataset``; the input size and class count come from them. The whole run flushes
    denormal numbers to zero (``runtime.flush_denormals``; the caller's mode is restored after).
    ``stop_after_epoch`` ends the run early, as an interruption right after that epoch's
    checkpoint would (tests use it).
    """
    with runtime.flush_denormals():
        return _fit(cfg, out, data=data, recipe=recipe, resume=resume, data_dir=data_dir, progress=progress,
                    log=log, stop_after_epoch=stop_after_epoch)


def _fit(cfg: Any, out: str, *, data: Any, recipe: str | None, resume: bool, data_dir: str | None,
         progress: bool, log: Callable[[str], None], stop_after_epoch: int | None) -> dict[str, Any]:
    rt = runtime.resolve(cfg)
    if cfg.dtype != rt.dtype:
        native = "" if rt.dtype == "bfloat16" else "no "
        log(f"dtype {cfg.dtype} -> {rt.dtype} ({native}native bf16 on {rt.device.type})")
        # config.json gets the dtype the run uses, so a resume elsewhere continues it alike
        cfg = dataclasses.replace(cfg, dtype=rt.dtype)
    if data is not None:   # the run folder says where its data came from
        cfg = dataclasses.replace(cfg, dataset=IN_MEMORY)
    elif cfg.dataset == IN_MEMORY:
        raise ConfigError(f"dataset={IN_MEMORY}: this config comes from a run trained on arrays passed to "
                          f"fit(data=...); pass them again")
    data, shape = load_data(cfg, rt.device, data_dir, data=data)
    x_train, y_train = data["x_train"], data["y_train"]
    n = x_train.shape[0]
    steps = math.ceil(n / cfg.batch_size)
    rt = dataclasses.replace(rt, steps=steps * cfg.epochs)
    g_eval = torch.Generator(device=rt.device).manual_seed(cfg.seed + 7)
    train_eval_idx = torch.randperm(n, generator=g_eval, device=rt.device)[: cfg.train_eval_size]
    kind = experiments.kind_of(cfg)
    par = rt.parallel
    if par.active:
        if kind.run is not None or (par.mode == "pipeline" and not kind.pipeline):
            raise ConfigError(f"{type(cfg).__name__} runs do not train on several processes"
                              + (" with parallel=pipeline (supervised FF does; use parallel=data)"
                                 if kind.run is None else ""))
        distributed.check_batch(cfg.batch_size, par)
        distributed.check_same(config.dumps(cfg), "config", par, rt.device)
        distributed.check_same(distributed.fingerprint(data), "dataset", par, rt.device)
        if not par.is_main:   # one process speaks for the job
            log = lambda s: None  # noqa: E731
        log(f"{par.mode} parallel over {par.world_size} processes ({par.backend})")
    if kind.run is not None:   # a kind with no training loop
        run = runs.Run(out, cfg, recipe=recipe)
        runs.write_json(run.path / DATA_FILE, inputs.shape_record(shape))
        results = kind.run(cfg, rt, {"test": data["x_test"], "train": x_train[train_eval_idx]}, run, shape)
        run.log({"epoch": cfg.epochs, **results})
        results.update({"recipe": recipe, "device": str(rt.device), "dtype": rt.dtype})
        run.write_results(results)
        return results

    task = build_task(cfg, rt, shape)
    shard = par.active and not kind.own_shard   # the loop hands this rank its share of each batch
    if shard:
        distributed.average_before_step(task.modules.values(), task.optimizers.values(), par)
    if task.setup is not None:
        task.setup(data)
    run = runs.Run(out, cfg, recipe=recipe, resume=resume, env=par.record(), writer=par.is_main)
    if shape is not None:
        if resume and inputs.shape_from_record(_read_data_record(out)) != shape:
            raise CheckpointError(f"{out} was trained on {_read_data_record(out) or 'MNIST-shaped data'}; "
                                  f"this data is {inputs.shape_record(shape)}")
        if par.is_main:
            runs.write_json(run.path / DATA_FILE, inputs.shape_record(shape))
    if task.info:
        log(" | ".join(f"{k} {v}" for k, v in task.info.items()))
    start_epoch, wall, first_loss = 0, 0.0, None
    if resume:
        start_epoch, wall, first_loss = _restore(out, run, task, cfg, rt.device)
        log(f"resuming {out} after epoch {start_epoch}")

    from tqdm.auto import tqdm
    # a run stopped after its last checkpoint but before results.json: finish from the last record
    metrics: dict[str, Any] = (runs.read_metrics(out) or [{}])[-1] if start_epoch >= cfg.epochs else {}
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        for k, opt in task.optimizers.items():
            for group in opt.param_groups:
                group["lr"] = task.base_lrs[k] * lr_factor(cfg.lr_schedule, epoch, cfg.epochs)
        task.train(True)
        g = epoch_generator(cfg.seed, epoch, rt.device)
        perm = torch.randperm(n, generator=g, device=rt.device)
        loss_sum = torch.zeros((), device=rt.device)
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=not progress, mininterval=0.5)
        sent = distributed.bytes_sent()

        def batch(i: int, perm: torch.Tensor = perm) -> torch.Tensor:
            """The training-set indices of the epoch's i-th batch."""
            return perm[i * cfg.batch_size:(i + 1) * cfg.batch_size]

        if task.begin_epoch is not None:
            task.begin_epoch(lambda i: (x_train[batch(i)], y_train[batch(i)], batch(i)), steps)
        for i in bar:
            idx = batch(i)
            if shard:
                idx = idx[par.shard(idx.shape[0])]
            loss = task.step(x_train[idx], y_train[idx], g, idx)
            loss_sum += loss
            if first_loss is None:   # the run's one extra host read: the scale divergence is judged by
                first = loss.detach().clone().reshape(1)
                distributed.combine_loss(first, par)
                first_loss = first.item()
            if progress and i % 100 == 99:  # .item() syncs: only when we show it
                bar.set_postfix(loss=f"{loss_sum.item() / (i + 1):.4f}")
        bar.close()
        sent = distributed.bytes_sent() - sent   # the steps' traffic, not the epoch's model sync below
        if task.end_epoch is not None:
            task.end_epoch()
        loss_sum = loss_sum.reshape(1)
        distributed.combine_loss(loss_sum, par)
        train_loss = loss_sum.item() / steps
        _check_divergence(train_loss, first_loss, epoch, cfg)
        wall += time.perf_counter() - t0
        metrics = {"epoch": epoch + 1, "train_loss": train_loss, "epoch_time_s": time.perf_counter() - t0,
                   "wall_time_s": wall, "lr": task.optimizers[next(iter(task.optimizers))].param_groups[0]["lr"]}
        if par.active:   # what this epoch's steps sent, summed over the processes
            sent = distributed.sum_over_ranks({"b": sent}, par, rt.device)["b"]
            metrics["sent_mb_per_step"] = sent / steps / 1e6
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
            task.train(False)
            for split, (xs, ys) in (("test", (data["x_test"], data["y_test"])),
                                    ("train", (x_train[train_eval_idx], y_train[train_eval_idx]))):
                errors = distributed.evaluate_sharded(task.evaluate, xs, ys, rt.parallel, rt.device)
                metrics.update({f"{split}_{k}": v for k, v in errors.items()})
        run.log(metrics)
        log(format_metrics(metrics))
        state = {"epoch": epoch + 1, "wall_time_s": wall, "first_loss": first_loss,
                 "optimizers": {k: o.state_dict() for k, o in task.optimizers.items()}}
        if task.get_state is not None:
            state["task"] = task.get_state()
        run.save_checkpoint(task.modules, state)
        distributed.barrier(par)   # every rank can resume from the checkpoint rank 0 wrote
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch and epoch + 1 < cfg.epochs:
            return {"interrupted_after_epoch": epoch + 1}

    task.train(False)
    results = {k: v for k, v in metrics.items() if k.startswith(("test_", "train_"))}
    results.update({"epochs": cfg.epochs, "wall_time_s": wall, "recipe": recipe, "train_images": n,
                    "device": str(rt.device), "dtype": rt.dtype, **task.info})
    if task.finalize is not None and par.is_main:
        task.finalize(run, data)
    run.write_results(results)
    return results


def _restore(out: str, run: runs.Run, task: Task, cfg: Any, device: torch.device) -> tuple[int, float, float | None]:
    """Load the last checkpoint of run folder ``out`` into ``task``; (epoch, wall time, first loss)."""
    state = runs.load_state(out)
    runs.load_model(run.path / runs.MODEL_FILE, task.modules)
    for k, opt in task.optimizers.items():
        opt.load_state_dict(state["optimizers"][k])
    start_epoch, wall = int(state["epoch"]), float(state["wall_time_s"])
    if task.set_state is not None and "task" in state:
        task.set_state({k: v.to(device) if torch.is_tensor(v) else v for k, v in state["task"].items()})
    if start_epoch >= cfg.epochs and (run.path / "results.json").exists():
        raise CheckpointError(f"{out} already finished all {cfg.epochs} epochs; nothing to resume "
                              f"(evaluate it with `fflab eval {out}`)")
    run.truncate_metrics(start_epoch)
    return start_epoch, wall, state.get("first_loss")


def _check_divergence(loss: float, first: float | None, epoch: int, cfg: Any) -> None:
    """``TrainingDiverged`` for a NaN or inf epoch loss, or a finite one ``DIVERGED_FACTOR`` times
    the first step's (at least 1): the checkpoint of the epoch before stays as it was."""
    lr = getattr(cfg, "lr", "?")
    if not math.isfinite(loss):
        raise TrainingDiverged(f"loss became {loss} in epoch {epoch + 1}; lower lr (now {lr}) or check the data")
    if first is not None and abs(loss) > DIVERGED_FACTOR * max(abs(first), 1.0):
        raise TrainingDiverged(f"loss became {loss:.3g} in epoch {epoch + 1}, over {DIVERGED_FACTOR:g} x the "
                               f"first step's {first:.3g}: the run diverged; lower lr (now {lr})")


def format_metrics(m: dict[str, Any]) -> str:
    """One fixed-format line per epoch."""
    parts = [f"epoch {m['epoch']:3d}", f"loss {m['train_loss']:.4f}", f"{m['epoch_time_s']:.1f}s"]
    parts += [f"{k} {100 * v:.2f}%" for k, v in m.items() if "error" in k]
    return " | ".join(parts)


def _read_data_record(run_dir: str | Path) -> dict[str, Any] | None:
    p = Path(run_dir) / DATA_FILE
    return runs.read_json(p) if p.exists() else None


def load_run(run_dir: str, device: str | None = None) -> tuple[Any, Task, Runtime]:
    """A run folder's config and its task with the checkpointed weights (safetensors: no code
    executed on load), on ``device`` (None: the config's; a run trained with ``device=cuda``
    can be evaluated with ``device="cpu"`` on a machine without a GPU)."""
    cfg, _ = experiments.read_config(run_dir)
    try:
        rt = runtime.resolve(cfg, device=device, set_threads=False)
    except ConfigError as e:
        if device is not None:
            raise
        raise ConfigError(f"{run_dir} was trained with device={cfg.device!r}: {e}; to evaluate it "
                          f"here, pass --device cpu") from None
    cfg = dataclasses.replace(cfg, dtype=rt.dtype)
    shape = inputs.shape_from_record(_read_data_record(run_dir)) if experiments.kind_of(cfg).images else None
    task = build_task(cfg, rt, shape)
    runs.load_model(Path(run_dir) / runs.MODEL_FILE, task.modules)
    return cfg, task, rt


def evaluate_run(run_dir: str, *, data_dir: str | None = None, split: str = "test",
                 device: str | None = None, data: Mapping[str, Any] | Sequence[Any] | None = None,
                 ) -> dict[str, float]:
    """Rebuild a run's model from its folder (no code executed on load) and evaluate it (on
    ``device``, None: the run's own; on ``data``, the arrays of a run trained with
    ``fit(data=...)``), denormals flushed as in training."""
    with runtime.flush_denormals():
        cfg, task, rt = load_run(run_dir, device)
        if cfg.dataset == IN_MEMORY and data is None:
            raise ConfigError(f"{run_dir} was trained on arrays passed to fit(data=...): pass them as data=")
        task.train(False)
        data, _ = load_data(cfg, rt.device, data_dir, data=data)
        return task.evaluate(data[f"x_{split}"], data[f"y_{split}"])
