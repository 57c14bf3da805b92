"""Error curves from ``metrics.jsonl``: one run's learning curves, a recurrent run's error against
the number of iterations, and several runs' test error on one axis."""
from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import CheckpointError
from ._common import (
    _ITER,
    _SPLIT_STYLE,
    _curve_keys,
    _error_axis,
    _error_keys,
    _figure,
    _integer_ticks,
    _number,
    _percent,
    _read_config,
    _run_name,
    _run_path,
    _save,
    _series,
    _split_method,
    read_run_metrics,
)


def plot_learning_curves(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Train and test error per epoch for every error metric (top), train loss (bottom).

    Test curves are solid, train curves dashed, one colour per evaluation method (for FF runs:
    per-label goodness and one-pass softmax). Written to ``out`` (default ``RUN_DIR/curves.png``).
    """
    run_dir = _run_path(run_dir)
    records = read_run_metrics(run_dir)
    cfg = _read_config(run_dir)
    keys = _curve_keys(_error_keys(records))
    methods = list(dict.fromkeys(_split_method(k)[1] for k in keys))

    fig = _figure(figsize=(8, 7), layout="constrained")
    ax_err, ax_loss = fig.subplots(2, 1, sharex=True, height_ratios=(2, 1))
    colors = [f"C{i % 10}" for i in range(len(methods))]
    all_errors: list[float] = []
    for k in keys:
        split, method = _split_method(k)
        xs, ys = _series(records, k)
        all_errors += ys
        ax_err.plot(xs, ys, _SPLIT_STYLE[split], marker="o", ms=3,
                    color=colors[methods.index(method)], label=f"{split} {method}".strip())
    if keys:
        _error_axis(ax_err, all_errors)
        ax_err.legend(loc="upper right", fontsize="small", ncol=2)
    else:
        ax_err.text(0.5, 0.5, "no error metrics yet", ha="center", va="center", transform=ax_err.transAxes)
    ax_err.set_ylabel("error")

    xs, ys = _series(records, "train_loss")
    ax_loss.plot(xs, ys, "-", marker="o", ms=3, color="k")
    if ys and min(ys) > 0 and max(ys) / min(ys) > 20:
        ax_loss.set_yscale("log")
    ax_loss.set_ylabel("train loss")
    ax_loss.set_xlabel("epoch")
    _integer_ticks(ax_loss)
    ax_loss.grid(True, alpha=0.3)

    final = []
    for split in ("test", "train"):
        parts = [f"{_split_method(k)[1]} {_percent(_series(records, k)[1][-1])}"
                 for k in keys if _split_method(k)[0] == split]
        if parts:
            final.append(f"final {split}: " + ", ".join(parts))
    epochs = records[-1].get("epoch", len(records))
    wall = _number(records[-1].get("wall_time_s"))
    head = _run_name(run_dir, cfg) + f" - {epochs} epochs" + (f", {wall:.3g} s" if wall is not None else "")
    fig.suptitle("\n".join([head, *final]), fontsize="medium")
    return _save(fig, out if out is not None else run_dir / "curves.png")


def plot_iterations(run_dir: str | Path, out: str | Path | None = None) -> Path | None:
    """Error against the number of iterations (``*_iter{k}`` keys of a recurrent run, paper
    section 4) at the last evaluated epoch. Returns None if the run has no such keys."""
    run_dir = _run_path(run_dir)
    records = read_run_metrics(run_dir)
    rec = next((r for r in reversed(records) if any(_ITER.search(k) and "error" in k for k in r)), None)
    if rec is None:
        return None
    series: dict[str, list[tuple[int, float]]] = {}
    for k, v in rec.items():
        m = _ITER.search(k)
        v = _number(v)
        if m and "error" in k and v is not None:
            series.setdefault(_ITER.sub("", k), []).append((int(m.group(1)), v))
    methods = list(dict.fromkeys(_split_method(b)[1] for b in sorted(series)))
    fig = _figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    values = []
    for base in sorted(series):
        split, method = _split_method(base)
        pts = sorted(series[base])
        values += [v for _, v in pts]
        ax.plot([k for k, _ in pts], [v for _, v in pts], _SPLIT_STYLE[split], marker="o", ms=4,
                color=f"C{methods.index(method) % 10}", label=f"{split} {method}".strip())
    _error_axis(ax, values)
    ax.set_xlabel("iterations")
    _integer_ticks(ax)
    ax.set_ylabel("error")
    ax.legend(loc="upper right", fontsize="small")
    ax.set_title(f"{_run_name(run_dir, _read_config(run_dir))}\nerror vs iterations, epoch {rec.get('epoch', '?')}",
                 fontsize="medium")
    return _save(fig, out if out is not None else run_dir / "iterations.png")


def _labels(run_dirs: list[Path]) -> list[str]:
    """Folder names, or parent/name where names repeat."""
    names = [p.name for p in run_dirs]
    return [f"{p.parent.name}/{p.name}" if names.count(p.name) > 1 else p.name for p in run_dirs]


def plot_compare(run_dirs: Sequence[str | Path], out: str | Path,
                 metric: str | Sequence[str] = "test_error_goodness") -> Path:
    """Several runs' ``metric`` per epoch on one axis.

    ``metric`` may be a sequence: each run uses the first of them it has (e.g.
    ``("test_error_goodness", "test_error")`` to put FF and backprop runs on one plot; the legend
    then names the metric where it is not the first). A run without any of them is skipped with a
    note on stderr; if no run has one, ``CheckpointError`` lists the error keys there are.
    """
    metrics = [metric] if isinstance(metric, str) else list(metric)
    paths = [_run_path(d) for d in run_dirs]
    fig = _figure(figsize=(8, 5), layout="constrained")
    ax = fig.subplots()
    values: list[float] = []
    plotted = 0
    available: set[str] = set()
    used: dict[str, None] = {}
    for i, (p, label) in enumerate(zip(paths, _labels(paths))):
        records = read_run_metrics(p)
        keys = _error_keys(records)
        available.update(keys)
        m = next((m for m in metrics if m in keys), None)
        if m is None:
            print(f"fflab plot: {p} has no {' or '.join(metrics)}; left out of the comparison", file=sys.stderr)
            continue
        xs, ys = _series(records, m)
        values += ys
        used[m] = None
        recipe = _read_config(p).get("recipe")
        label += (f" [{recipe}]" if recipe else "") + (f" ({m})" if m != metrics[0] else "")
        label += f": {_percent(ys[-1])}"
        ax.plot(xs, ys, "-", marker="o", ms=3, color=f"C{i % 10}", label=label)
        plotted += 1
    if not plotted:
        raise CheckpointError(f"no run has {' or '.join(metrics)}; error metrics there are: "
                              f"{', '.join(sorted(available)) or 'none'}")
    _error_axis(ax, values)
    ax.set_xlabel("epoch")
    _integer_ticks(ax)
    ax.set_ylabel(next(iter(used)) if len(used) == 1 else "error")
    ax.legend(loc="upper right", fontsize="small")
    ax.set_title(f"{' / '.join(used)}: {plotted} runs (final value in the legend)", fontsize="medium")
    return _save(fig, out)
