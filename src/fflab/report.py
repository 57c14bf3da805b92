"""Markdown tables from run folders (reads run folders only)."""
from __future__ import annotations

from pathlib import Path

from . import runs
from .errors import DataError


def results_table(run_dirs: list[str]) -> str:
    """A markdown table of sequence runs (the sleep findings): one row per run folder with its
    recipe, negatives, sleep_k, sleep_stop_epoch, lr/momentum, the final train and held-out
    per-character error, and the best held-out error with its epoch. Reads run folders only."""
    head = ("| run | recipe | negatives | sleep_k | stop epoch | lr / momentum | epochs "
            "| train err | held-out err | best held-out (epoch) |")
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for d in run_dirs:
        cfg = runs.read_json(Path(d) / "config.json")
        evals = [m for m in runs.read_metrics(d) if "test_error_char" in m]
        if not evals:
            raise DataError(f"{d} has no test_error_char records (not a sequence run, or no evaluation yet)")
        last = evals[-1]
        best = min(evals, key=lambda m: m["test_error_char"])
        pct = lambda v: f"{100 * v:.2f}%"
        rows.append(f"| {Path(d).name} | {cfg.get('recipe') or '-'} | {cfg.get('negatives', 'bp')} "
                    f"| {cfg.get('sleep_k', '-')} | {cfg.get('sleep_stop_epoch') or '-'} "
                    f"| {cfg['lr']:g} / {cfg['momentum']:g} | {last['epoch']} "
                    f"| {pct(last['train_error_char'])} | {pct(last['test_error_char'])} "
                    f"| {pct(best['test_error_char'])} ({best['epoch']}) |")
    return "\n".join(rows)
