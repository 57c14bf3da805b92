"""What every figure shares: reading a run folder (config, metrics), naming metric keys, and the
figure / save / error-axis helpers.

Matplotlib is imported inside the functions, so importing this module stays light.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from ..errors import CheckpointError

_ITER = re.compile(r"_?iter(\d+)")
_SPLIT_STYLE = {"test": "-", "train": "--", "": ":"}


# ----------------------------------------------------------------------------- reading
def _run_folder(run_dir: str | Path) -> Path:
    """The run folder as a Path; ``CheckpointError`` if it is not a directory."""
    p = Path(run_dir)
    if not p.is_dir():
        raise CheckpointError(f"{p} is not a run folder (no such directory)")
    return p


def _run_path(run_dir: str | Path) -> Path:
    """A run folder with a metrics.jsonl (``CheckpointError`` otherwise)."""
    p = _run_folder(run_dir)
    if not (p / "metrics.jsonl").is_file():
        raise CheckpointError(f"{p} is not a run folder (no metrics.jsonl)")
    return p


def read_run_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The per-epoch records of ``metrics.jsonl``.

    A damaged last line is skipped (the run may be writing it right now); a damaged line before it,
    or a file with no records, is a ``CheckpointError``.
    """
    from ..runs import read_metrics  # the parser resume uses: same rules for a torn last line
    p = _run_path(run_dir)
    records = read_metrics(p)
    if not records:
        raise CheckpointError(f"{p / 'metrics.jsonl'} holds no epochs yet")
    return records


def _read_config(run_dir: Path) -> dict[str, Any]:
    """config.json as a plain dict ({} when absent or unreadable: plots do not need it)."""
    try:
        d = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return d if isinstance(d, dict) else {}


def _run_name(run_dir: Path, cfg: dict[str, Any]) -> str:
    what = cfg.get("recipe") or cfg.get("kind") or "run"
    return f"{what}  ({run_dir.name})"


# ----------------------------------------------------------------------------- metric keys
def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(epochs, values) for the records where ``key`` is a finite number."""
    xs, ys = [], []
    for i, r in enumerate(records):
        v = _number(r.get(key))
        if v is not None:
            xs.append(float(r.get("epoch", i + 1)))
            ys.append(v)
    return xs, ys


def _error_keys(records: list[dict[str, Any]]) -> list[str]:
    keys: dict[str, None] = {}
    for r in records:
        for k, v in r.items():
            if "error" in k and _number(v) is not None:
                keys[k] = None
    return sorted(keys)


def _split_method(key: str) -> tuple[str, str]:
    """'test_error_goodness' -> ('test', 'goodness'); 'test_error' -> ('test', 'error')."""
    split = ""
    for s in ("test", "train"):
        if key.startswith(s + "_"):
            split, key = s, key[len(s) + 1:]
            break
    method = key.replace("error_", "", 1) if key.startswith("error_") else key
    return split, method


def _curve_keys(keys: list[str]) -> list[str]:
    """Error keys for the learning curves: every plain key, and of ``iter{k}`` keys only the
    highest k of each series (plot_iterations shows the rest)."""
    plain = [k for k in keys if not _ITER.search(k)]
    last: dict[str, tuple[int, str]] = {}
    for k in keys:
        m = _ITER.search(k)
        if m:
            base = _ITER.sub("", k)
            if base not in last or int(m.group(1)) > last[base][0]:
                last[base] = (int(m.group(1)), k)
    return plain + [k for base, (_, k) in sorted(last.items()) if base not in plain]


def _percent(v: float) -> str:
    return f"{100 * v:.2f}%"


# ----------------------------------------------------------------------------- drawing
def _figure(**kw):
    from matplotlib.figure import Figure
    return Figure(**kw)


def _save(fig, out: str | Path) -> Path:
    from .. import runs  # atomic_write: temp file + rename, a reader never sees half a PNG
    out = Path(out)
    runs.atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    return out


def _error_axis(ax, values: list[float]) -> None:
    """Percent labels; log scale when every error is positive (a zero error has no place on a log
    axis), with labelled minor ticks when the errors span too few decades for the major ones."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    fmt = FuncFormatter(lambda v, _: f"{100 * v:.3g}%")
    if values and min(values) > 0:
        ax.set_yscale("log")
        decades = math.log10(max(values) / min(values))
        if decades < 2.5:
            subs = (2, 3, 4, 5, 6, 7, 8, 9) if decades < 1 else (2, 5)
            ax.yaxis.set_minor_locator(LogLocator(subs=subs))
            ax.yaxis.set_minor_formatter(fmt)
        else:
            ax.yaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_formatter(fmt)
    ax.grid(True, which="major", alpha=0.3)


def _integer_ticks(ax) -> None:
    """Whole-number ticks on the x axis (epochs, iterations)."""
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
