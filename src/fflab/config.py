"""Run configurations: one frozen dataclass per kind of run, and type-checked overrides.

``apply_overrides(cfg, ["lr=0.01", "hidden=1000,1000"])`` returns a new config; an unknown key
is a ConfigError that names it and lists the valid keys, a value of the wrong type names the
key, the value and the expected type.
"""
from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable

from .errors import ConfigError


# Ranges by key name, checked whenever a config is made (recipes, overrides, a run folder's
# config.json), for every config kind that has the key, including those of later modules. Without
# them a batch size of 0, an lr of -1 or an eval_every of 0 failed deep inside torch or the loop,
# and a negative batch size or subset trained on nothing without a word. Tuples are checked
# element by element; every number must be finite.
_RANGES: dict[str, tuple[Callable[[float], bool], str]] = {}
for _keys, _ok, _says in (
        (("epochs", "batch_size", "eval_every", "neutral_every", "iterations", "num_seen", "num_unseen",
          "hidden", "units_per_location", "patch", "stride"), lambda v: v >= 1, ">= 1"),
        (("train_subset", "test_subset", "train_eval_size", "jitter", "threads", "block_size",
          "blur_passes", "sleep_k", "sleep_stop_epoch", "eval_from_layer", "padding",
          "readout_layers", "eval_window", "lr", "head_lr", "readout_lr", "weight_decay",
          "head_weight_decay", "readout_weight_decay", "peer_norm", "temperature", "target_goodness"),
         lambda v: v >= 0, ">= 0"),
        (("momentum", "dropout"), lambda v: 0 <= v < 1, "in [0, 1)"),
        (("damping",), lambda v: 0 <= v <= 1, "in [0, 1]")):
    _RANGES.update(dict.fromkeys(_keys, (_ok, _says)))


def check_ranges(cfg: Any) -> None:
    """Raise ConfigError naming the first key out of its range (``_RANGES``) or not finite."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        for v in value if isinstance(value, tuple) else (value,):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if not math.isfinite(v):
                raise ConfigError(f"{f.name}={value!r}: must be a finite number")
            ok, says = _RANGES.get(f.name, (None, ""))
            if ok is not None and not ok(v):
                raise ConfigError(f"{f.name}={value!r}: must be {says}")


@dataclass(frozen=True)
class CommonConfig:
    """Keys every run shares (and the range check of every config kind: ``check_ranges``)."""
    dataset: str = "mnist"
    epochs: int = 10
    batch_size: int = 100
    seed: int = 0
    device: str = "auto"          # auto | cpu | cuda | cuda:N
    dtype: str = "float32"        # float32 | bfloat16 (autocast forward, fp32 master weights) | auto
                                  # (bfloat16 where the device multiplies bf16 natively, else float32)
    train_subset: int = 0         # use only the first N training images (0 = all); quick modes
    test_subset: int = 0          # evaluate on the first N test images (0 = all)
    train_eval_size: int = 10000  # training images used to measure train error each evaluation
    eval_every: int = 1           # evaluate every N epochs (and always after the last)
    jitter: int = 0               # random shifts of up to N pixels each way (paper section 4)
    threads: int = 0              # torch CPU threads (0 = torch default)

    def __post_init__(self) -> None:
        check_ranges(self)


@dataclass(frozen=True)
class SupervisedFFConfig(CommonConfig):
    """Supervised FF with the label in the first pixels (paper section 3.3)."""
    hidden: tuple[int, ...] = (2000, 2000, 2000, 2000)
    goodness: str = "ssq"                 # ssq | min_ssq | mean_ssq
    threshold: float | None = None        # None: mean-square 1 per unit (official code)
    peer_norm: float = 0.0                # official code 0.03
    negatives: str = "hard"               # hard | uniform
    optimizer: str = "adam"               # adam | sgd (sgd: official EMA smoothing, dampening=momentum)
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_schedule: str = "linear_half"      # linear_half (official: decay to ~0 over 2nd half) | cosine | constant
    head_lr: float = 1e-3
    head_weight_decay: float = 0.0
    eval_from_layer: int = 1              # evaluations use hidden layers [eval_from_layer:] (paper: skip the first)
    per_label_eval: bool = True           # per-label goodness test (10 passes); one-pass is always run
    block_size: int = 0                   # block goodness (paper section 7): units per block, 0 = whole layer
    engine: str = "auto"                  # auto (= fused when the net allows, else autograd) | analytic | fused | autograd
                                          # fused: analytic + one shared first-layer image product
    neutral_every: int = 1                # run the neutral-label pass on every k-th step only; other steps
                                          # draw hard negatives from each image's cached probabilities
    compile: bool = False                 # engine=fused only: torch.compile its update and neutral pass (fuses
                                          # the elementwise work between products; with bf16 also the optimizer
                                          # step with the bf16 weight copies; needs a C++ compiler on CPU;
                                          # BENCHMARKS.md)


@dataclass(frozen=True)
class BPConfig(CommonConfig):
    """Backprop baselines in the same harness (SPEC section 2)."""
    model: str = "mlp"                    # mlp | cnn
    hidden: tuple[int, ...] = (1000, 1000, 1000)
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_schedule: str = "cosine"
    dropout: float = 0.0


CONFIG_KINDS: dict[str, type] = {c.__name__: c for c in (SupervisedFFConfig, BPConfig)}


def register_config(cls: type) -> type:
    """Register another config dataclass (used by later modules: unsupervised, recurrent, ...)."""
    CONFIG_KINDS[cls.__name__] = cls
    return cls


def _parse(key: str, text: str, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and text.strip().lower() in ("none", "null", ""):
            return None
        inner = [a for a in args if a is not type(None)]
        return _parse(key, text, inner[0])
    if origin is tuple:
        parts = _expand_times(text.replace(" ", ""))
        return tuple(_parse(key, p, args[0]) for p in parts)
    try:
        if tp is bool:
            low = text.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if tp is int:
            return int(text)
        if tp is float:
            return float(text)
        if tp is str:
            return text
    except ValueError:
        raise ConfigError(f"{key}={text!r}: expected {getattr(tp, '__name__', tp)}") from None
    raise ConfigError(f"{key}: unsupported type {tp}")


def _expand_times(text: str) -> list[str]:
    """'2000x4' -> ['2000'] * 4; '1000,500x2' -> ['1000', '500', '500']."""
    out: list[str] = []
    for part in text.split(","):
        if "x" in part:
            value, times = part.split("x", 1)
            try:
                out += [value] * int(times)
            except ValueError:
                raise ConfigError(f"bad repeat {part!r} (use e.g. 2000x4)") from None
        elif part:
            out.append(part)
    return out


def field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def apply_overrides(cfg: Any, overrides: list[str] | dict[str, Any]) -> Any:
    """Return ``cfg`` with ``key=value`` strings (or a dict of typed values) applied."""
    types_ = field_types(type(cfg))
    items = overrides.items() if isinstance(overrides, dict) else [_split(o) for o in overrides]
    changes: dict[str, Any] = {}
    for key, value in items:
        if key not in types_:
            raise ConfigError(f"unknown config key {key!r} for {type(cfg).__name__}; "
                              f"valid keys: {', '.join(sorted(types_))}")
        changes[key] = _parse(key, value, types_[key]) if isinstance(value, str) else _coerce(key, value, types_[key])
    return dataclasses.replace(cfg, **changes)


def _split(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key=value")
    key, value = item.split("=", 1)
    return key.strip(), value


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check an already-typed value (from JSON or Python) against the field type."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        tp = [a for a in args if a is not type(None)][0]
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={value!r}: expected a list")
        return tuple(_coerce(key, v, args[0]) for v in value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ConfigError(f"{key}={value!r}: expected {tp.__name__}")
    return value


def to_dict(cfg: Any) -> dict[str, Any]:
    return {"kind": type(cfg).__name__, **dataclasses.asdict(cfg)}


def from_dict(d: dict[str, Any]) -> Any:
    d = dict(d)
    kind = d.pop("kind", None)
    if kind not in CONFIG_KINDS:
        raise ConfigError(f"unknown config kind {kind!r}; known: {sorted(CONFIG_KINDS)}")
    cls = CONFIG_KINDS[kind]
    return apply_overrides(cls(), d)


def dumps(cfg: Any) -> str:
    return json.dumps(to_dict(cfg), indent=2, sort_keys=True)
