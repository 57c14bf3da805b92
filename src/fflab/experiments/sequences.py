"""FF next-character model on Aesop's fables, self-generated negatives and sleep (paper section 7).

The model (the paper's sequence experiment): the previous ``CONTEXT`` = 10 characters, one-hot
(10 x 30 = 300 inputs), plus a *candidate* next character, one-hot (30 inputs): 330 inputs into a
dense FF stack (paper: 3 hidden layers of 2000 ReLUs). Goodness says whether the candidate fits
the context; the prediction is the candidate with the highest goodness summed over the layers
``eval_from_layer:`` (default all: the first layer sees the candidate directly, and nothing else
in this input makes it uninformative). Each string of 100 characters gives 90 predicted
positions (characters 10..99, each from the 10 real characters before it).

Positives: every real (context, next character) pair of the batch's strings (B x 90 cases).
Negatives, produced by the model itself (``negatives=``):

* ``teacher`` (teacher forcing): the real context with a next character *sampled* from the
  model's own predictive distribution ``softmax(G_total / temperature)`` over the 30 candidates,
  ``G_total`` = summed goodness = the sum over layers of the logits ``G - theta`` of p(positive)
  up to a constant. The true character may be drawn (``exclude_true=False``, the default): the
  paper says the negative is the model's own prediction, and this keeps the negative phase a
  sample of the model's distribution, which is what lets it run offline ("sleep"); once a
  prediction is right, the case is a positive and a negative at once and the two terms hold its
  goodness near the threshold instead of pushing it ever higher. ``exclude_true=True`` gives
  the supervised hard-negative variant (never the true character).
* ``generated``: whole strings rolled out by the model from the real first 10 characters (each
  character sampled as above from the 10 *generated* characters before it); every (generated
  context, generated character) pair is a negative (B x 90 cases).

Sleep (``sleep_k``): 0 interleaves the phases (every update has positives and negatives, the
usual FF step); k > 0 makes k positive-only updates ("wake"), then k negative-only updates
("sleep", negatives generated from the model at that moment), and so on; ``phase_schedule`` is
the rule. The update counter runs across epochs and is saved with the model (``clock``), so a
resumed run continues the schedule. ``sleep_stop_epoch`` = e > 0: from epoch e+1 on there is no
negative phase at all, every update is positive-only ("sleep deprivation").

Also here: the backprop baseline of the same size (``SequenceBPConfig``: an MLP
300 -> hidden -> 30 with cross entropy on the same cases).

Data (``load_aesop_split``, dataset ``aesop``): ``load_aesop`` gives 248 strings; the *last* 24 (the 24 last
fables in file order, so no fable is in both parts) are held out as the test split, the first
224 train. ``x_*`` are the (N, 100) long codes, ``y_*`` zeros (the targets are in the strings).

DEVIATION: the paper gives neither the optimizer, the batch size, the sampling temperature nor
whether the true character may be a negative; the choices above and in the recipes are ours.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import runs
from ..config import CommonConfig, ObjectiveFields, OptimizerFields, check_choice
from ..errors import ConfigError, DataError
from ..layers import FFDense, normalize
from ..nets import FFNet, mlp
from ..optim import make_optimizer
from ..runtime import Runtime
from ..task import Task
from ._common import check_eval_from_layer
from .backprop import bp_step

CONTEXT = 10
NUM_SYMBOLS = 30
NUM_HELDOUT = 24
NUM_TRAIN = 224  # 248 strings - 24 held out
IN_FEATURES = (CONTEXT + 1) * NUM_SYMBOLS  # 330: context one-hots, then the candidate one-hot
PHASES = ("both", "pos", "neg")


# ----------------------------------------------------------------------------- configs
@dataclass(frozen=True)
class SequenceFFConfig(ObjectiveFields, OptimizerFields, CommonConfig):
    """FF next-character model on the Aesop strings (paper section 7). ``batch_size`` counts
    strings (each gives 90 positive cases). ``momentum`` is also Adam's beta1."""
    dataset: str = "aesop"
    epochs: int = 20
    batch_size: int = 4
    train_eval_size: int = 224            # all training strings
    lr_schedule: str = "constant"
    hidden: tuple[int, ...] = (2000, 2000, 2000)
    block_size: int = 0
    negatives: str = "teacher"            # teacher | generated
    temperature: float = 1.0              # sampling: softmax(G_total / T); 0 = argmax
    exclude_true: bool = False            # teacher only: never draw the real next character
    sleep_k: int = 0                      # 0: interleaved; k: k positive updates, then k negative
    sleep_stop_epoch: int = 0             # > 0: no negative phase after this epoch (sleep deprivation)
    eval_from_layer: int = 0              # predictions sum goodness over hidden layers [eval_from_layer:]


@dataclass(frozen=True)
class SequenceBPConfig(OptimizerFields, CommonConfig):
    """Backprop baseline of the same size: MLP 300 -> hidden -> 30, cross entropy."""
    dataset: str = "aesop"
    epochs: int = 20
    batch_size: int = 4
    train_eval_size: int = 224
    lr_schedule: str = "constant"
    hidden: tuple[int, ...] = (2000, 2000, 2000)


# ----------------------------------------------------------------------------- data
def _load_strings(data_dir: str | None) -> torch.Tensor:
    from ..data.aesop import load_aesop
    return load_aesop(data_dir=data_dir).x


def load_aesop_split(cfg: CommonConfig, data_dir: str | None) -> dict[str, torch.Tensor]:
    """The ``aesop`` dataset: train = strings 0..223, test = the last 24 (held out)."""
    from ..data.aesop import split
    x = _load_strings(data_dir)
    x_train, x_test = split(x, NUM_HELDOUT)
    if x_train.shape[0] != NUM_TRAIN:
        raise DataError(f"expected {NUM_TRAIN + NUM_HELDOUT} Aesop strings, got {x.shape[0]}")
    return {"x_train": x_train, "y_train": torch.zeros(x_train.shape[0], dtype=torch.long),
            "x_test": x_test, "y_test": torch.zeros(x_test.shape[0], dtype=torch.long)}



# ----------------------------------------------------------------------------- cases
def contexts(x: torch.Tensor, context: int = CONTEXT) -> tuple[torch.Tensor, torch.Tensor]:
    """Strings (B, L) -> contexts (B*(L-context), context) and next characters (B*(L-context),).

    Row ``b*(L-context) + j`` is position ``t = context + j`` of string b: (x[b, t-context:t], x[b, t]).
    """
    b, length = x.shape
    if length <= context:
        raise ValueError(f"strings of {length} characters leave no position to predict after {context}")
    windows = x.unfold(1, context, 1)[:, : length - context]  # (B, L-context, context)
    return windows.reshape(-1, context), x[:, context:].reshape(-1)


def encode_cases(ctx: torch.Tensor, nxt: torch.Tensor) -> torch.Tensor:
    """(N, 10) contexts and (N,) candidates -> (N, 330) float: 10 one-hots, then the candidate's."""
    return torch.cat([F.one_hot(ctx, NUM_SYMBOLS).flatten(1), F.one_hot(nxt, NUM_SYMBOLS)], 1).float()


@torch.no_grad()
def candidate_goodness(net: FFNet, ctx: torch.Tensor, *, layers: list[int] | None = None,
                       chunk: int = 8192, rt: Runtime | None = None) -> torch.Tensor:
    """Summed goodness of every candidate next character: (N, 10) -> (N, 30).

    The same numbers as ``net(encode_cases(ctx repeated, each candidate))`` (checked in the
    tests), computed faster: the normalized one-hot input has the same length for every case
    (11 ones in 330), so the first layer's input product splits into a context part, computed
    once per context, plus the candidate's column of the weights; only the layers above see all
    N*30 cases (chunked to about ``chunk`` cases). ``layers`` default all.
    """
    layers = list(range(len(net.layers))) if layers is None else layers
    first = net.layers[0]
    if not isinstance(first, FFDense) or first.in_features != IN_FEATURES:
        raise ValueError(f"the first layer must be FFDense({IN_FEATURES}, ...), got {first}")
    # normalize(): one-hot entries of an input with 11 ones in 330 become 1 / (eps + rms).
    scale = 1.0 / (net.eps + math.sqrt((CONTEXT + 1) / IN_FEATURES))
    w_ctx = first.weight[:, : CONTEXT * NUM_SYMBOLS].float()        # (D1, 300)
    w_cand = first.weight[:, CONTEXT * NUM_SYMBOLS:].float().t()    # (30, D1)
    per = max(1, chunk // NUM_SYMBOLS)
    out = []
    for s in range(0, ctx.shape[0], per):
        c = ctx[s:s + per]
        n = c.shape[0]
        z_ctx = F.one_hot(c, NUM_SYMBOLS).flatten(1).float() @ w_ctx.t()          # (n, D1)
        z = scale * (z_ctx[:, None, :] + w_cand[None]) + first.bias.float()      # (n, 30, D1)
        hs = [torch.relu(z).reshape(n * NUM_SYMBOLS, -1)]
        with (rt or Runtime(ctx.device)).autocast():
            for layer in net.layers[1:]:
                hs.append(layer(normalize(hs[-1], net.eps)))
        out.append(net.goodness(hs, layers).float().view(n, NUM_SYMBOLS))
    return torch.cat(out) if out else torch.zeros(0, NUM_SYMBOLS, device=ctx.device)


def sample_candidates(logits: torch.Tensor, *, generator: torch.Generator, temperature: float = 1.0,
                      exclude: torch.Tensor | None = None) -> torch.Tensor:
    """One draw per row from ``softmax(logits / temperature)``: (N, 30) -> (N,).

    ``temperature=0`` takes the argmax (no randomness). ``exclude`` (N,) removes one candidate
    per row (the true character, for ``exclude_true``).
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    logits = logits.float()
    if exclude is not None:
        logits = logits.scatter(1, exclude[:, None], float("-inf"))
    if temperature == 0:
        return logits.argmax(1)
    probs = torch.softmax(logits / temperature, 1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def teacher_negatives(net: FFNet, ctx: torch.Tensor, *, generator: torch.Generator,
                      temperature: float = 1.0, layers: list[int] | None = None,
                      exclude: torch.Tensor | None = None, rt: Runtime | None = None) -> torch.Tensor:
    """Teacher forcing: for each real context (N, 10), a next character (N,) sampled from the model."""
    logits = candidate_goodness(net, ctx, layers=layers, rt=rt)
    return sample_candidates(logits, generator=generator, temperature=temperature, exclude=exclude)


@torch.no_grad()
def generate(net: FFNet, start: torch.Tensor, length: int, *, generator: torch.Generator,
             temperature: float = 1.0, layers: list[int] | None = None, rt: Runtime | None = None) -> torch.Tensor:
    """Roll strings out from ``start`` (B, >=10): (B, length), the first characters are ``start``'s.

    Each new character is sampled from the model given the 10 characters before it (generated
    ones once past the start).
    """
    if start.shape[1] < CONTEXT:
        raise ValueError(f"start needs at least {CONTEXT} characters, got {start.shape[1]}")
    seq = start[:, :length]
    while seq.shape[1] < length:
        logits = candidate_goodness(net, seq[:, -CONTEXT:], layers=layers, rt=rt)
        nxt = sample_candidates(logits, generator=generator, temperature=temperature)
        seq = torch.cat([seq, nxt[:, None]], 1)
    return seq


def phase_schedule(update: int, k: int) -> str:
    """The phase of (0-based) update number ``update``: "both" for k = 0 (interleaved), else
    "pos" for the first k updates, "neg" for the next k, and so on."""
    if k < 0:
        raise ValueError(f"sleep_k must be >= 0, got {k}")
    if k == 0:
        return "both"
    return "pos" if (update // k) % 2 == 0 else "neg"


@torch.no_grad()
def char_error(scores: torch.Tensor, nxt: torch.Tensor) -> float:
    """1 - per-character accuracy: scores (N, 30), true next characters (N,)."""
    return (scores.argmax(1) != nxt).float().mean().item()


class Clock(nn.Module):
    """The number of updates made so far, saved with the model so that resumed runs continue the
    sleep schedule where it was."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))


def _optimizer(params, cfg: SequenceFFConfig | SequenceBPConfig) -> torch.optim.Optimizer:
    """``make_optimizer``, except that ``momentum`` is also Adam's beta1: the sleep recipes need
    "very high momentum" with either optimizer (SGD: the gradient EMA of ``make_optimizer``)."""
    if cfg.optimizer == "adam":   # momentum in [0, 1): config.check_ranges
        return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.momentum, 0.999), weight_decay=cfg.weight_decay)
    return make_optimizer(params, name=cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay)


def _check_common(cfg: CommonConfig) -> None:
    """Sequence runs read the Aesop strings and nothing else."""
    if cfg.dataset != "aesop":
        raise ConfigError(f"dataset={cfg.dataset!r}: sequence runs use dataset=aesop")
    if cfg.jitter:
        raise ConfigError("jitter applies to images; sequence runs need jitter=0")


# ----------------------------------------------------------------------------- FF task
def build_ff(cfg: SequenceFFConfig, rt: Runtime, shape: object = None) -> Task:
    """The FF next-character task (``shape`` is not used: the strings fix the sizes)."""
    _check_common(cfg)
    check_choice("negatives", cfg.negatives, ("teacher", "generated"))
    if cfg.exclude_true and cfg.negatives != "teacher":
        raise ConfigError("exclude_true applies to negatives=teacher only")
    check_eval_from_layer(cfg.eval_from_layer, len(cfg.hidden))
    device = rt.device
    net = FFNet.dense(IN_FEATURES, cfg.hidden, goodness=cfg.goodness, threshold=cfg.threshold,
                      block_size=cfg.block_size).to(device)
    clock = Clock().to(device)
    layers = list(range(cfg.eval_from_layer, len(cfg.hidden)))
    opt = _optimizer(net.parameters(), cfg)
    # fit draws ceil(n / batch_size) batches per epoch; the data are fixed (224 training strings),
    # so the epoch of an update follows from the update counter (needed for sleep_stop_epoch).
    n_train = min(cfg.train_subset or NUM_TRAIN, NUM_TRAIN)
    steps_per_epoch = math.ceil(n_train / cfg.batch_size)
    counter: dict[str, int] = {}
    phase_log: list[str] = []  # one entry per update: tests and diagnostics

    def phase_of(update: int) -> str:
        if cfg.sleep_stop_epoch and update // steps_per_epoch >= cfg.sleep_stop_epoch:
            return "pos"  # sleep deprivation: the negative phase is gone
        return phase_schedule(update, cfg.sleep_k)

    def negatives(x: torch.Tensor, ctx: torch.Tensor, nxt: torch.Tensor,
                  g: torch.Generator) -> torch.Tensor:
        if cfg.negatives == "teacher":
            nxt_neg = teacher_negatives(net, ctx, generator=g, temperature=cfg.temperature, layers=layers,
                                        exclude=nxt if cfg.exclude_true else None, rt=rt)
            return encode_cases(ctx, nxt_neg)
        seq = generate(net, x[:, :CONTEXT], x.shape[1], generator=g, temperature=cfg.temperature,
                       layers=layers, rt=rt)
        return encode_cases(*contexts(seq))

    def step(x: torch.Tensor, y: torch.Tensor, g: torch.Generator, idx: torch.Tensor | None = None) -> torch.Tensor:
        if "updates" not in counter:  # first step of this process (after a resume: the saved count)
            counter["updates"] = int(clock.updates)
        update = counter["updates"]
        phase = phase_of(update)
        phase_log.append(phase)
        ctx, nxt = contexts(x)
        x_pos = encode_cases(ctx, nxt) if phase != "neg" else ctx.new_zeros(0, IN_FEATURES, dtype=torch.float)
        x_neg = negatives(x, ctx, nxt, g) if phase != "pos" else x_pos[:0]
        n_pos = x_pos.shape[0]
        with rt.autocast():
            hs = net(torch.cat([x_pos, x_neg]))
        loss = torch.stack(net.local_losses([h[:n_pos] for h in hs], [h[n_pos:] for h in hs])).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        counter["updates"] = update + 1
        clock.updates.fill_(update + 1)
        return loss.detach()

    def evaluate(x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        ctx, nxt = contexts(x)
        return {"error_char": char_error(candidate_goodness(net, ctx, layers=layers, rt=rt), nxt)}

    def finalize(run: runs.Run, data: dict[str, torch.Tensor]) -> None:
        write_samples(run, data["x_test"][:4], lambda start, g, t: generate(
            net, start, data["x_test"].shape[1], generator=g, temperature=t, layers=layers, rt=rt))

    return Task(modules={"net": net, "clock": clock}, optimizers={"net": opt}, base_lrs={"net": cfg.lr},
                step=step, evaluate=evaluate, finalize=finalize,
                extra={"phase_log": phase_log})


def write_samples(run: runs.Run, x: torch.Tensor, roll) -> None:
    """samples.json: for a few held-out strings, the real text and the model's continuations of
    its first 10 characters (greedy, and sampled at temperature 1)."""
    from ..data.aesop import decode
    g = torch.Generator(device=x.device).manual_seed(0)
    start = x[:, :CONTEXT]
    runs.write_json(run.path / "samples.json", {
        "real": decode(x), "greedy": decode(roll(start, g, 0.0)), "sampled": decode(roll(start, g, 1.0))})


# ----------------------------------------------------------------------------- BP baseline
class NextCharMLP(nn.Module):
    """Backprop baseline: one-hot context (N, 10) -> MLP 300 -> hidden -> 30 logits."""

    def __init__(self, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.mlp = mlp(CONTEXT * NUM_SYMBOLS, hidden, num_classes=NUM_SYMBOLS)

    def forward(self, ctx: torch.Tensor) -> torch.Tensor:
        return self.mlp(F.one_hot(ctx, NUM_SYMBOLS).flatten(1).float())


def build_bp(cfg: SequenceBPConfig, rt: Runtime, shape: object = None) -> Task:
    """The backprop next-character baseline (``shape`` is not used)."""
    _check_common(cfg)
    model = NextCharMLP(cfg.hidden).to(rt.device)
    opt = _optimizer(model.parameters(), cfg)

    def step(x: torch.Tensor, y: torch.Tensor, g: torch.Generator, idx: torch.Tensor | None = None) -> torch.Tensor:
        ctx, nxt = contexts(x)
        return bp_step(model, opt, ctx, nxt, rt)

    @torch.no_grad()
    def evaluate(x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        ctx, nxt = contexts(x)
        with rt.autocast():
            logits = model(ctx)
        return {"error_char": char_error(logits, nxt)}

    return Task(modules={"model": model}, optimizers={"model": opt}, base_lrs={"model": cfg.lr},
                step=step, evaluate=evaluate)
