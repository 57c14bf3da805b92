"""Training and evaluation loops (no argparse, no plotting).

One shared epoch loop (``fit``) drives every kind of run; each kind plugs in a ``Task``: its
modules, optimizers, a minibatch ``step`` and an ``evaluate`` function. Supervised FF (paper
section 3.3) and the backprop baselines (section 3.1) are defined here; later kinds register
their own task builders in ``TASKS``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import runs
from .config import BPConfig, CommonConfig, SupervisedFFConfig
from .errors import CheckpointError, ConfigError, SlowDtypeWarning, TrainingDiverged
from .negatives import hard_wrong_labels, overlay_label, uniform_wrong_labels
from .nets import CNN, FFNet, SoftmaxHead, mlp

if TYPE_CHECKING:
    from .analytic import LabelledInput


# ----------------------------------------------------------------------------- helpers
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device={name!r}: choose auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but CUDA is not available (use device=cpu or auto)")
    return dev


DTYPES = ("float32", "bfloat16", "auto")


def concrete_dtype(dtype: str, device: torch.device) -> str:
    """``dtype`` as a run uses it on ``device``: ``auto`` is bfloat16 where the device multiplies
    bf16 natively (a CPU with AVX-512 BF16 or AMX, a bf16 GPU) and float32 elsewhere, where bf16
    products run 10-80 x slower than fp32 (BENCHMARKS.md, "Ninth session")."""
    if dtype not in DTYPES:
        raise ConfigError(f"dtype={dtype!r}: choose {', '.join(DTYPES)}")
    if dtype != "auto":
        return dtype
    from . import products
    return "bfloat16" if products.native_bf16(device) else "float32"


def with_concrete_dtype(cfg: Any, device: torch.device) -> Any:
    """``cfg`` with ``dtype=auto`` resolved for ``device`` (configs without a dtype unchanged)."""
    dtype = getattr(cfg, "dtype", None)
    if dtype is None:
        return cfg
    concrete = concrete_dtype(dtype, device)
    return cfg if concrete == dtype else dataclasses.replace(cfg, dtype=concrete)


def autocast(device: torch.device, dtype: str):
    """bf16 autocast for the forward products; master weights and optimizer stay fp32."""
    dtype = concrete_dtype(dtype, device)
    if dtype == "float32":
        return contextlib.nullcontext()
    if dtype == "bfloat16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    raise AssertionError(dtype)   # concrete_dtype checked it


def epoch_generator(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    """A fresh generator per epoch, derived from (seed, epoch): resuming at any epoch boundary
    replays exactly the randomness an uninterrupted run would have used."""
    g = torch.Generator(device=device)
    g.manual_seed(seed * 1_000_003 + epoch)
    return g


def lr_factor(schedule: str, epoch: int, epochs: int) -> float:
    """Learning-rate multiplier for 0-based ``epoch``.

    linear_half: the official code's schedule, constant for the first half, then decayed
    linearly to ~0 (last epoch 2/epochs) over the second half.
    """
    if schedule == "constant":
        return 1.0
    if schedule == "linear_half":
        return min(1.0, 2.0 * (epochs - epoch) / epochs)
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * epoch / epochs))
    raise ConfigError(f"lr_schedule={schedule!r}: choose linear_half, cosine or constant")


def _fusable(params: list[torch.Tensor]) -> bool:
    """torch's fused optimizers need floating tensors on CPU or CUDA."""
    return all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)


def make_optimizer(params, *, name: str, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    params = list(params)
    if name == "adam":
        # fused: one kernel for the whole update instead of ~10 elementwise passes per tensor
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=_fusable(params))
    if name == "sgd":
        # dampening=momentum makes the buffer an exponential moving average of the gradient,
        # which is the official code's "smoothing 0.9" (grad_avg = 0.9 grad_avg + 0.1 grad).
        # fused (CPU and CUDA): one pass over each tensor; measured 0.6 ms less per 3 x 1000 step
        # than the default multi-pass update on 2 CPU threads (BENCHMARKS.md).
        opt = torch.optim.SGD(params, lr=lr, momentum=momentum, dampening=momentum, weight_decay=weight_decay,
                              fused=_fusable(params))
        if momentum:
            # The average starts at 0, as the official smoothing does: torch's SGD would start
            # its buffer at the first gradient itself, undamped, making the first step
            # 1 / (1 - momentum) = 10 x the official one (with lr 0.01 it sent the 3 x 1000 net's
            # FF loss from 1.5e3 to 1.8e5 in one step; BENCHMARKS.md, "Eighth session").
            for p in params:
                opt.state[p]["momentum_buffer"] = torch.zeros_like(p)
        return opt
    raise ConfigError(f"optimizer={name!r}: choose adam or sgd")


def _load_mnist_like(cfg: CommonConfig, data_dir: str | None) -> dict[str, torch.Tensor]:
    from . import data
    return data.load_mnist(cfg.dataset, data_dir=data_dir)


# dataset name -> loader(cfg, data_dir) -> {"x_train", "y_train", "x_test", "y_test"} (CPU tensors).
# Other run kinds register theirs (e.g. the Aesop strings of paper section 7).
DATASETS: dict[str, Callable[[Any, str | None], dict[str, torch.Tensor]]] = {
    "mnist": _load_mnist_like, "fashion_mnist": _load_mnist_like}


def load_data(cfg: CommonConfig, device: torch.device, data_dir: str | None = None) -> dict[str, torch.Tensor]:
    """Whole dataset as tensors on ``device`` (MNIST is 190 MB as float32: batches are index draws)."""
    if cfg.dataset not in DATASETS:
        raise ConfigError(f"dataset={cfg.dataset!r}: choose one of {sorted(DATASETS)}")
    d = DATASETS[cfg.dataset](cfg, data_dir)
    if cfg.train_subset:
        d["x_train"], d["y_train"] = d["x_train"][: cfg.train_subset], d["y_train"][: cfg.train_subset]
    if cfg.test_subset:
        d["x_test"], d["y_test"] = d["x_test"][: cfg.test_subset], d["y_test"][: cfg.test_subset]
    return {k: v.to(device) for k, v in d.items()}


def jitter(x: torch.Tensor, max_shift: int, *, generator: torch.Generator) -> torch.Tensor:
    from .data.augment import jitter as _jitter  # lazy: only jittered runs need it
    return _jitter(x, max_shift, generator=generator)


# ----------------------------------------------------------------------------- task protocol
@dataclass
class Task:
    """What a run kind plugs into ``fit``."""
    modules: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    base_lrs: dict[str, float]
    # step(x, y, g, idx): one update on images x, labels y; idx are their training-set indices
    # (None when the caller has none, e.g. benchmarks on synthetic data).
    step: Callable[..., torch.Tensor]
    evaluate: Callable[[torch.Tensor, torch.Tensor], dict[str, float]]
    # Optional end-of-run extras (e.g. goodness histograms) written into the run folder.
    finalize: Callable[[runs.Run, dict[str, torch.Tensor]], None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # Training state that is not a module or an optimizer (e.g. cached per-image probabilities):
    # saved in state.pt at every checkpoint and restored on resume. Tensors and plain values only.
    get_state: Callable[[], dict[str, Any]] | None = None
    set_state: Callable[[dict[str, Any]], None] | None = None
    # Called by ``fit`` once the data are loaded (before any step), e.g. to size per-image caches.
    setup: Callable[[dict[str, torch.Tensor]], None] | None = None
    # What the task resolved from its config (e.g. engine=auto -> "fused"): printed when the run
    # starts and written into results.json, so a run's numbers say what made them.
    info: dict[str, str] = field(default_factory=dict)

    def train(self, mode: bool = True) -> None:
        for m in self.modules.values():
            m.train(mode)


TASKS: dict[str, Callable[[Any, torch.device], Task]] = {}


def register_task(config_cls: type):
    def deco(fn):
        TASKS[config_cls.__name__] = fn
        return fn
    return deco


def build_task(cfg: Any, device: torch.device) -> Task:
    from .recipes import _load_all
    _load_all()  # registers the task builders of every run kind
    try:
        builder = TASKS[type(cfg).__name__]
    except KeyError:
        raise ConfigError(f"no trainer for config kind {type(cfg).__name__}") from None
    cfg = with_concrete_dtype(cfg, device)
    warn_if_slow_dtype(getattr(cfg, "dtype", "float32"), device)
    torch.manual_seed(cfg.seed)  # model initialization
    try:
        return builder(cfg, device)
    except ValueError as e:
        # The layers and torch's optimizers check their arguments with ValueError (an unknown
        # goodness, a block size that does not divide a layer): here those arguments are config
        # keys, so it is the config's error, one line at the command line.
        raise ConfigError(f"{type(cfg).__name__}: {e}") from e


def warn_if_slow_dtype(dtype: str, device: torch.device) -> None:
    """bf16 on a CPU without native bf16 products (AVX2 only, e.g. AMD Zen 3) runs every product
    through a slow fallback, 10-80 x slower than fp32 (BENCHMARKS.md): say so before a run crawls."""
    from . import products
    if dtype == "bfloat16" and device.type == "cpu" and not products.NATIVE_BF16:
        warnings.warn("dtype=bfloat16 on a CPU without native bf16 products (no AVX-512 BF16 or "
                      "AMX): every product runs in a slow fallback, far slower than float32. "
                      "Use dtype=float32 here.", SlowDtypeWarning, stacklevel=3)


# ----------------------------------------------------------------------------- the loop
def fit(cfg: Any, out: str, *, recipe: str | None = None, resume: bool = False,
        data_dir: str | None = None, progress: bool = True, log: Callable[[str], None] = print,
        stop_after_epoch: int | None = None) -> dict[str, Any]:
    """Train ``cfg`` into run folder ``out`` (or continue it with ``resume=True``); return results.

    ``stop_after_epoch`` ends the process-equivalent early (used by tests to simulate an
    interruption right after a checkpoint).
    """
    from tqdm.auto import tqdm

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    if getattr(cfg, "dtype", None) == "auto":
        # config.json gets the dtype the run uses, so a resume elsewhere continues it alike
        cfg = with_concrete_dtype(cfg, device)
        log(f"dtype auto -> {cfg.dtype} ({'' if cfg.dtype == 'bfloat16' else 'no '}native bf16 on {device.type})")
    data = load_data(cfg, device, data_dir)
    task = build_task(cfg, device)
    if task.setup is not None:
        task.setup(data)
    run = runs.Run(out, cfg, recipe=recipe, resume=resume)
    if task.info:
        log(" | ".join(f"{k} {v}" for k, v in task.info.items()))
    start_epoch, wall = 0, 0.0
    if resume:
        state = runs.load_state(out)
        runs.load_model(run.path / runs.MODEL_FILE, task.modules)
        for k, opt in task.optimizers.items():
            opt.load_state_dict(state["optimizers"][k])
        start_epoch, wall = int(state["epoch"]), float(state["wall_time_s"])
        if task.set_state is not None and "task" in state:
            task.set_state({k: v.to(device) if torch.is_tensor(v) else v for k, v in state["task"].items()})
        if start_epoch >= cfg.epochs:
            raise CheckpointError(f"{out} already finished all {cfg.epochs} epochs; nothing to resume "
                                  f"(evaluate it with `fflab eval {out}`)")
        run.truncate_metrics(start_epoch)
        log(f"resuming {out} after epoch {start_epoch}")

    x_train, y_train = data["x_train"], data["y_train"]
    n = x_train.shape[0]
    steps = math.ceil(n / cfg.batch_size)
    g_eval = torch.Generator(device=device).manual_seed(cfg.seed + 7)
    train_eval_idx = torch.randperm(n, generator=g_eval, device=device)[: cfg.train_eval_size]
    metrics: dict[str, Any] = {}
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        for k, opt in task.optimizers.items():
            for group in opt.param_groups:
                group["lr"] = task.base_lrs[k] * lr_factor(cfg.lr_schedule, epoch, cfg.epochs)
        task.train(True)
        g = epoch_generator(cfg.seed, epoch, device)
        perm = torch.randperm(n, generator=g, device=device)
        loss_sum = torch.zeros((), device=device)
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=not progress, mininterval=0.5)
        for i in bar:
            idx = perm[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            loss = task.step(x_train[idx], y_train[idx], g, idx)
            loss_sum += loss
            if progress and i % 100 == 99:  # .item() syncs: only when we show it
                bar.set_postfix(loss=f"{loss_sum.item() / (i + 1):.4f}")
        bar.close()
        train_loss = loss_sum.item() / steps
        if not math.isfinite(train_loss):
            raise TrainingDiverged(f"loss became {train_loss} in epoch {epoch + 1}; lower lr "
                                   f"(now {cfg.lr if hasattr(cfg, 'lr') else '?'}) or check the data")
        wall += time.perf_counter() - t0
        metrics = {"epoch": epoch + 1, "train_loss": train_loss, "epoch_time_s": time.perf_counter() - t0,
                   "wall_time_s": wall, "lr": task.optimizers[next(iter(task.optimizers))].param_groups[0]["lr"]}
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
            task.train(False)
            metrics.update({f"test_{k}": v for k, v in task.evaluate(data["x_test"], data["y_test"]).items()})
            metrics.update({f"train_{k}": v for k, v in task.evaluate(
                x_train[train_eval_idx], y_train[train_eval_idx]).items()})
        run.log(metrics)
        log(format_metrics(metrics))
        state = {"epoch": epoch + 1, "wall_time_s": wall,
                 "optimizers": {k: o.state_dict() for k, o in task.optimizers.items()}}
        if task.get_state is not None:
            state["task"] = task.get_state()
        run.save_checkpoint(task.modules, state)
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch and epoch + 1 < cfg.epochs:
            return {"interrupted_after_epoch": epoch + 1}

    task.train(False)
    results = {k: v for k, v in metrics.items() if k.startswith(("test_", "train_"))}
    results.update({"epochs": cfg.epochs, "wall_time_s": wall, "recipe": recipe,
                    "train_images": n, "device": str(device), **task.info})
    if hasattr(cfg, "dtype"):
        results["dtype"] = cfg.dtype
    if task.finalize is not None:
        task.finalize(run, data)
    run.write_results(results)
    return results


def format_metrics(m: dict[str, Any]) -> str:
    """One fixed-format line per epoch."""
    parts = [f"epoch {m['epoch']:3d}", f"loss {m['train_loss']:.4f}", f"{m['epoch_time_s']:.1f}s"]
    parts += [f"{k} {100 * v:.2f}%" for k, v in m.items() if "error" in k]
    return " | ".join(parts)


def load_run(run_dir: str, device: str | None = None) -> tuple[Any, Task, torch.device]:
    """A run folder's config and its task with the checkpointed weights (safetensors: no code
    executed on load), on ``device`` (None: the config's; a run trained with ``device=cuda``
    can be evaluated with ``device="cpu"`` on a machine without a GPU)."""
    cfg, _ = runs.read_config(run_dir)
    try:
        device = resolve_device(cfg.device if device is None else device)
    except ConfigError as e:
        if device is not None:
            raise
        raise ConfigError(f"{run_dir} was trained with device={cfg.device!r}: {e}; to evaluate it "
                          f"here, pass --device cpu") from None
    cfg = with_concrete_dtype(cfg, device)
    task = build_task(cfg, device)
    runs.load_model(runs.Path(run_dir) / runs.MODEL_FILE, task.modules)
    return cfg, task, device


def evaluate_run(run_dir: str, *, data_dir: str | None = None, split: str = "test",
                 device: str | None = None) -> dict[str, float]:
    """Rebuild a run's model from its folder (no code executed on load) and evaluate it
    (on ``device``, None: the run's own)."""
    cfg, task, device = load_run(run_dir, device)
    task.train(False)
    data = load_data(cfg, device, data_dir)
    return task.evaluate(data[f"x_{split}"], data[f"y_{split}"])


# ----------------------------------------------------------------------------- supervised FF
@torch.no_grad()
def ff_predict(net: FFNet, head: SoftmaxHead | None, x: torch.Tensor, *, layers: list[int],
               per_label: bool, num_classes: int = 10, chunk: int = 1000,
               dtype: str = "float32", fused: bool = True) -> dict[str, torch.Tensor]:
    """Predictions by (a) per-label goodness and (b) one pass with the neutral label (section 3.3).

    (a) runs the net once per label and picks the label with the highest goodness summed over
    ``layers``; (b) feeds the neutral label and reads the softmax head.
    """
    from . import analytic
    out: dict[str, list[torch.Tensor]] = {"goodness": [], "onepass": []}
    dev = x.device
    # The label occupies the first pixels only, so dense nets share the first layer's image product
    # across labels (analytic.LabelledInput); False: use the plain path.
    fused_dtype = ({"float32": None, "bfloat16": torch.bfloat16}.get(dtype, False)
                   if fused and analytic.supports(net) else False)
    for s in range(0, x.shape[0], chunk):
        xb = x[s:s + chunk]
        b = xb.shape[0]
        with autocast(dev, dtype):
            if head is not None:
                hs = net(overlay_label(xb, None, num_classes))
                out["onepass"].append(head(net.features(hs, layers)).argmax(1))
            if per_label:
                if fused_dtype is not False:   # one image product for all C labels
                    hs = analytic.LabelledInput(net, xb, num_classes, dtype=fused_dtype).forward_each_label()
                else:
                    labels = torch.arange(num_classes, device=dev).repeat_interleave(b)  # (C*b,)
                    hs = net(overlay_label(xb.repeat(num_classes, 1), labels, num_classes))
                g = net.goodness(hs, layers).view(num_classes, b)
                out["goodness"].append(g.argmax(0))
    return {k: torch.cat(v) for k, v in out.items() if v}


def choose_engine(requested: str, net: FFNet) -> str:
    """The supervised-FF engine a run uses: ``requested``, or for ``auto`` the fastest one that
    supports ``net``. That is ``fused`` (analytic gradients with one first-layer image product
    shared by the neutral, positive and negative passes) for dense layers with a goodness
    ``analytic`` differentiates, else ``autograd``. The fused and analytic engines make the same
    updates as autograd up to float rounding (tests/test_analytic.py); fused is the faster of
    the two (fp32, batch 100, Adam, paired on a 2-core Zen 3: 1.07-1.10 x for 3 x 1000, 1.06-1.08 x
    for 4 x 2000; BENCHMARKS.md, "Thirteenth session"). ``auto`` meant ``analytic`` before that
    session."""
    from . import analytic
    if requested not in ("auto", "analytic", "fused", "autograd"):
        raise ConfigError(f"engine={requested!r}: choose auto, analytic, fused or autograd")
    if requested in ("analytic", "fused") and not analytic.supports(net):
        raise ConfigError(f"engine={requested} needs dense layers with ssq, min_ssq or mean_ssq goodness")
    if requested != "auto":
        return requested
    return "fused" if analytic.supports(net) else "autograd"


@register_task(SupervisedFFConfig)
def supervised_ff_task(cfg: SupervisedFFConfig, device: torch.device) -> Task:
    num_classes, in_features = 10, 784
    if cfg.negatives not in ("hard", "uniform"):
        raise ConfigError(f"negatives={cfg.negatives!r}: choose hard or uniform")
    if not 0 <= cfg.eval_from_layer < len(cfg.hidden):
        raise ConfigError(f"eval_from_layer={cfg.eval_from_layer} must be < number of hidden layers {len(cfg.hidden)}")
    net = FFNet.dense(in_features, cfg.hidden, goodness=cfg.goodness, threshold=cfg.threshold,
                      peer_norm=cfg.peer_norm, block_size=cfg.block_size).to(device)
    layers = list(range(cfg.eval_from_layer, len(cfg.hidden)))
    head = SoftmaxHead(sum(cfg.hidden[i] for i in layers), num_classes).to(device)
    opt = make_optimizer(net.parameters(), name=cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum,
                         weight_decay=cfg.weight_decay)
    head_opt = make_optimizer(head.parameters(), name=cfg.optimizer, lr=cfg.head_lr, momentum=cfg.momentum,
                              weight_decay=cfg.head_weight_decay)
    from . import analytic
    engine = choose_engine(cfg.engine, net)
    analytic_dtype = torch.bfloat16 if cfg.dtype == "bfloat16" else None

    ff_update = analytic.LabelledInput.ff_backward
    neutral_head = None   # compile=true: the neutral pass and the head's gradient as one graph
    # The net's optimizer step where the fused engine has a faster one than opt.step(); it takes
    # the gradients as a list from ff_update.
    compiled_update = product_update = None
    if cfg.compile:
        if engine != "fused":
            raise ConfigError(f"compile=true applies to engine=fused only (this run: engine={engine})")
        ff_update = analytic.compiled_ff_backward(device)
        neutral_head = analytic.compile_static(neutral_head_grads, device)
        if analytic_dtype is not None:
            # bf16: the net's optimizer step compiled too, taking the bf16 gradients as they leave
            # their products and writing the bf16 weight copies the next step's products read
            # (same update as opt.step(), tests/test_update.py; 0.4-0.8 ms less per 3 x 1000
            # step, 14.6 ms per 4 x 2000 step, BENCHMARKS.md).
            from .update import CompiledUpdate
            compiled_update = CompiledUpdate(opt, copied=[layer.weight for layer in net.layers],
                                             dtype=analytic_dtype)
    if engine == "fused" and analytic_dtype is None and cfg.optimizer == "sgd" and cfg.momentum > 0:
        # fp32 SGD: each weight-gradient product made straight into the momentum buffer, one GEMM
        # instead of writing the gradient out and reading it back (same update as opt.step(),
        # tests/test_update.py; BENCHMARKS.md, "Eighth session").
        from .update import ProductSGD
        product_update = ProductSGD(opt)
    net_update = compiled_update or product_update
    # Per-image hard-negative probabilities from the last neutral pass that saw the image
    # (uniform until then). Only used when neutral_every > 1; grown to the training-set size.
    cache = {"probs": torch.empty(0, num_classes, device=device), "step": 0, "sized": False}

    def setup(data: dict[str, torch.Tensor]) -> None:
        if cfg.neutral_every > 1:   # no cache (nor its bytes in every checkpoint) when unused
            cached_probs(None, data["x_train"].shape[0])
            cache["sized"] = True

    def cached_probs(idx: torch.Tensor | None, need: int = 0) -> torch.Tensor:
        probs = cache["probs"]
        if idx is not None and not cache["sized"]:   # step() called outside fit: size from the indices
            need = int(idx.max()) + 1
        if need > probs.shape[0]:
            grown = torch.full((need, num_classes), 1.0 / num_classes, device=device)
            grown[: probs.shape[0]] = probs
            cache["probs"] = probs = grown
        return probs

    def sample_negatives(probs: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if cfg.negatives == "hard":
            return hard_wrong_labels(probs, y, generator=g)
        return uniform_wrong_labels(y, num_classes, generator=g)

    def step(x: torch.Tensor, y: torch.Tensor, g: torch.Generator, idx: torch.Tensor | None = None) -> torch.Tensor:
        if cfg.jitter:
            x = jitter(x, cfg.jitter, generator=g)
        b = x.shape[0]
        # The neutral pass trains the one-pass softmax head and gives the hard-negative probabilities.
        # With neutral_every = k > 1 it runs on every k-th step only (the images of the other steps use
        # probabilities cached when they were last in a neutral step): 4 instead of 5 forward-equivalents.
        stale = cfg.neutral_every > 1 and idx is not None and cache["step"] % cfg.neutral_every != 0
        cache["step"] += 1
        if net_update is None:   # net_update takes the gradients as a list: no .grad to clear
            opt.zero_grad(set_to_none=True)
        li = (analytic.LabelledInput(net, x, num_classes, dtype=analytic_dtype,
                                     weights=compiled_update.weights() if compiled_update is not None else None)
              if engine == "fused" else None)
        if stale:
            probs = cached_probs(idx)[idx]
        else:   # the head learns on neutral steps only: its gradients are set here, its step below
            if neutral_head is not None:   # the fused engine, compiled: no autograd for the head
                probs, head.linear.weight.grad, head.linear.bias.grad = neutral_head(li, head, y, layers)
            else:
                if li is not None:  # one first-layer image product shared by all three passes
                    hs = li.forward(None)
                else:
                    with torch.no_grad(), autocast(device, cfg.dtype):
                        hs = net(overlay_label(x, None, num_classes))
                head_opt.zero_grad(set_to_none=True)
                logits = head(net.features(hs, layers))
                F.cross_entropy(logits, y).backward()   # the head's own graph: the FF net is detached
                probs = logits.detach().softmax(1)
            if cfg.neutral_every > 1 and idx is not None:
                cached_probs(idx)[idx] = probs.float()
        y_neg = sample_negatives(probs, y, g)
        grads: list[torch.Tensor] | None = [] if net_update is not None else None
        if li is not None:
            loss = ff_update(li, y, y_neg, grads, product_update is not None)
        else:
            # Positive and negative passes as one batched product per layer.
            x_pn = torch.cat([overlay_label(x, y, num_classes), overlay_label(x, y_neg, num_classes)])
            if engine == "analytic":  # same gradients as autograd (tests/test_analytic.py), less overhead
                loss, _ = analytic.ff_backward(net, x_pn, b, dtype=analytic_dtype)
            else:
                with autocast(device, cfg.dtype):
                    hs = net(x_pn)
                loss = torch.stack(net.local_losses([h[:b] for h in hs], [h[b:] for h in hs])).sum()
                loss.backward()
        if net_update is not None:
            net_update.step(grads)
        else:
            opt.step()
        if not stale:
            head_opt.step()
        return loss.detach()

    def evaluate(x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        preds = ff_predict(net, head, x, layers=layers, per_label=cfg.per_label_eval, dtype=cfg.dtype)
        return {f"error_{k}": (p != y).float().mean().item() for k, p in preds.items()}

    def finalize(run: runs.Run, data: dict[str, torch.Tensor]) -> None:
        save_goodness_samples(run, net, data["x_test"][:2000], data["y_test"][:2000], num_classes)

    def set_state(state: dict[str, Any]) -> None:
        cache.update(probs=state["neg_probs"], step=int(state["step"]))

    return Task(modules={"net": net, "head": head}, optimizers={"net": opt, "head": head_opt},
                base_lrs={"net": cfg.lr, "head": cfg.head_lr}, step=step, evaluate=evaluate,
                finalize=finalize, setup=setup, get_state=lambda: {"neg_probs": cache["probs"].cpu(), "step": cache["step"]},
                set_state=set_state, info={"engine": engine})


@torch.no_grad()
def neutral_head_grads(li: LabelledInput, head: SoftmaxHead, y: torch.Tensor, layers: list[int]
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The neutral pass of ``li`` and the one-pass softmax head on its normalized activities
    (paper section 3.3): returns the head's probabilities (B, C) and the gradient of its mean
    cross-entropy on labels ``y`` for its weight and bias, made without autograd
    (dL/dlogits = (softmax - onehot(y)) / B). ``compile=true`` runs it as one graph: the
    elementwise work around the products fused, and no autograd graph to build and walk; the
    same numbers as autograd's up to float rounding (tests/test_analytic.py)."""
    feats = li.net.features(li.forward(None), layers)
    probs = head(feats).softmax(1)
    dlogits = (probs - F.one_hot(y, probs.shape[1]).to(probs.dtype)) / y.shape[0]
    return probs, dlogits.t() @ feats, dlogits.sum(0)


@torch.no_grad()
def save_goodness_samples(run: runs.Run, net: FFNet, x: torch.Tensor, y: torch.Tensor, num_classes: int) -> None:
    """Per-layer goodness of positive (true label) and uniform-wrong-label negative test images,
    for ``fflab plot`` (goodness.safetensors: pos.{layer}, neg.{layer})."""
    g = torch.Generator(device=x.device).manual_seed(0)
    hs_pos = net(overlay_label(x, y, num_classes))
    hs_neg = net(overlay_label(x, uniform_wrong_labels(y, num_classes, generator=g), num_classes))
    write_goodness(run, net, hs_pos, hs_neg)


@torch.no_grad()
def write_goodness(run: runs.Run, net: FFNet, hs_pos: list[torch.Tensor], hs_neg: list[torch.Tensor]) -> None:
    """goodness.safetensors (pos.{i}, neg.{i}, threshold.{i} per layer), read by ``fflab plot``."""
    from safetensors.torch import save_file
    tensors = {}
    for i, layer in enumerate(net.layers):
        tensors[f"pos.{i}"] = layer.goodness(hs_pos[i]).cpu().contiguous()
        tensors[f"neg.{i}"] = layer.goodness(hs_neg[i]).cpu().contiguous()
        tensors[f"threshold.{i}"] = torch.tensor([layer.threshold])
    runs._atomic_write(run.path / "goodness.safetensors", lambda tmp: save_file(tensors, tmp))


def bp_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
            device: torch.device, dtype: str) -> torch.Tensor:
    """One backprop step with cross-entropy (the baselines of SPEC section 2 and paper section 7)."""
    with autocast(device, dtype):
        loss = F.cross_entropy(model(x).float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


# ----------------------------------------------------------------------------- backprop
@register_task(BPConfig)
def bp_task(cfg: BPConfig, device: torch.device) -> Task:
    if cfg.model == "mlp":
        model: nn.Module = mlp(784, cfg.hidden)
        if cfg.dropout:
            raise ConfigError("dropout is only used by model=cnn")
    elif cfg.model == "cnn":
        model = CNN(dropout=cfg.dropout)
    else:
        raise ConfigError(f"model={cfg.model!r}: choose mlp or cnn")
    model = model.to(device)
    opt = make_optimizer(model.parameters(), name=cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum,
                         weight_decay=cfg.weight_decay)
    def step(x: torch.Tensor, y: torch.Tensor, g: torch.Generator, idx: torch.Tensor | None = None) -> torch.Tensor:
        if cfg.jitter:
            x = jitter(x, cfg.jitter, generator=g)
        return bp_step(model, opt, x, y, device, cfg.dtype)

    @torch.no_grad()
    def evaluate(x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        wrong = 0
        for s in range(0, x.shape[0], 1000):
            with autocast(device, cfg.dtype):
                wrong += (model(x[s:s + 1000]).argmax(1) != y[s:s + 1000]).sum()
        return {"error": (wrong / x.shape[0]).item()}

    return Task(modules={"model": model}, optimizers={"model": opt}, base_lrs={"model": cfg.lr},
                step=step, evaluate=evaluate)
