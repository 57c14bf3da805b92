"""Run configurations: field groups shared by every kind of run, and type-checked overrides.

Each kind of run (``fflab.experiments``) declares one frozen dataclass made of the groups below
and its own keys.

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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
          "readout_layers", "eval_window", "lr", "head_lr", "weight_decay",
          "head_weight_decay", "peer_norm", "temperature", "target_goodness"),
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


# ----------------------------------------------------------------------------- field groups
# Each group is declared once and shared by every kind of run that has those keys; a kind's
# config is a frozen dataclass made of the groups it needs plus its own keys. ``groups(cfg)``
# tells which group a key belongs to (``fflab recipes NAME`` prints them that way).

@dataclass(frozen=True)
class RunFields:
    """What to train on, for how long, with which seed, and how often to evaluate."""
    dataset: str = "mnist"
    epochs: int = 10
    batch_size: int = 100
    seed: int = 0
    train_subset: int = 0         # use only the first N training images (0 = all); quick modes
    test_subset: int = 0          # evaluate on the first N test images (0 = all)
    train_eval_size: int = 10000  # training images used to measure train error each evaluation
    eval_every: int = 1           # evaluate every N epochs (and always after the last)
    jitter: int = 0               # random shifts of up to N pixels each way (paper section 3.3)
    parallel: str = "auto"        # under torchrun: data | pipeline (auto: data); see fflab.distributed

    def __post_init__(self) -> None:
        check_ranges(self)


@dataclass(frozen=True)
class RuntimeFields:
    """Where and how the arithmetic runs. These keys change a run's numbers by rounding only."""
    device: str = "auto"          # auto | cpu | cuda | cuda:N
    dtype: str = "float32"        # float32 | bfloat16 (bf16 products, fp32 master weights) | auto
                                  # (bfloat16 where the device multiplies bf16 natively, else float32)
    threads: int = 0              # torch CPU threads (0 = torch default)


@dataclass(frozen=True)
class CommonConfig(RuntimeFields, RunFields):
    """Keys every run shares: the run and runtime groups."""


@dataclass(frozen=True)
class OptimizerFields:
    """The optimizer of the FF layers (or of the backprop model)."""
    optimizer: str = "adam"       # adam | sgd (sgd: the official EMA smoothing, dampening=momentum)
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_schedule: str = "linear_half"   # linear_half (official: decay to ~0 over the 2nd half) | cosine | constant


@dataclass(frozen=True)
class HeadFields:
    """The linear softmax head(s) on the normalized FF activities (paper sections 3.2, 3.3)."""
    head_lr: float = 1e-3
    head_weight_decay: float = 0.0


@dataclass(frozen=True)
class ObjectiveFields:
    """Each layer's FF objective (paper section 2; ``fflab.objective``)."""
    goodness: str = "ssq"                 # ssq | min_ssq | mean_ssq
    threshold: float | None = None        # None: mean-square 1 per unit (official code)
    peer_norm: float = 0.0                # official code 0.03


GROUPS: tuple[tuple[str, type], ...] = (
    ("run", RunFields), ("runtime", RuntimeFields), ("optimizer", OptimizerFields),
    ("head", HeadFields), ("objective", ObjectiveFields))
# Keys of a kind's own that, like the runtime group, choose how the arithmetic runs and change a
# run's numbers by rounding only.
RUNTIME_KEYS = frozenset({"device", "dtype", "threads", "engine", "compile", "local_impl"})
# Old key names still read from run folders written before the rename: old -> new.
RENAMED = {"readout_lr": "head_lr", "readout_weight_decay": "head_weight_decay"}
# Old values still read from run folders: (key, old value) -> new value.
RENAMED_VALUES = {("engine", "fused"): "shared"}


def groups(cfg: Any) -> dict[str, list[str]]:
    """The keys of ``cfg`` by group: the shared groups first, then the kind's own keys ("model")."""
    out: dict[str, list[str]] = {}
    seen: set[str] = set()
    for name, grp in GROUPS:
        if isinstance(cfg, grp):
            keys = [f.name for f in dataclasses.fields(grp)]
            out[name] = keys
            seen.update(keys)
    own = [f.name for f in dataclasses.fields(cfg) if f.name not in seen]
    if own:
        out["model"] = own
    return out


def check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    """A ConfigError naming ``key`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ConfigError(f"{key}={value!r}: choose {', '.join(choices[:-1])} or {choices[-1]}")


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


def from_dict(d: dict[str, Any], kinds: dict[str, type], *, note: Callable[[str], None] | None = None) -> Any:
    """The config that ``to_dict`` wrote: ``d["kind"]`` names its class in ``kinds``. Keys and
    values renamed since (``RENAMED``, ``RENAMED_VALUES``) are read under their new names, and
    ``note`` (if given) is told about each."""
    d = dict(d)
    kind = d.pop("kind", None)
    if kind not in kinds:
        raise ConfigError(f"unknown config kind {kind!r}; known: {sorted(kinds)}")
    for old, new in RENAMED.items():
        if old in d and new not in d:
            d[new] = d.pop(old)
            if note is not None:
                note(f"config key {old!r} is now called {new!r}")
    for (key, old), new in RENAMED_VALUES.items():
        if d.get(key) == old:
            d[key] = new
            if note is not None:
                note(f"{key}={old} is now called {key}={new}")
    if isinstance(d.get("compile"), bool):   # before compile=auto it was a bool
        d["compile"] = "true" if d["compile"] else "false"
    return apply_overrides(kinds[kind](), d)


def dumps_grouped(cfg: Any) -> str:
    """The config as ``key = value`` lines under one heading per group; runtime keys are marked."""
    lines = [f"kind: {type(cfg).__name__}"]
    for name, keys in groups(cfg).items():
        lines.append(f"[{name}]" + ("  (changes the numbers by rounding only)" if name == "runtime" else ""))
        for k in keys:
            mark = "  # runtime: rounding only" if k in RUNTIME_KEYS and name != "runtime" else ""
            lines.append(f"  {k} = {getattr(cfg, k)!r}{mark}")
    return "\n".join(lines)


def dumps(cfg: Any) -> str:
    return json.dumps(to_dict(cfg), indent=2, sort_keys=True)
