"""``fflab train RECIPE [--out DIR] [--seed N] [key=value ...]``, ``--resume RUN_DIR`` and
``--auto-resume`` (one command line that can be rerun after any interruption, as torchrun's
``--max-restarts`` does)."""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a recipe (see `fflab recipes`)",
                       description="Train a recipe into a run folder. Overrides are key=value "
                                   "(type-checked; an unknown key is an error).")
    p.add_argument("recipe", nargs="?", help="recipe name (omit with --resume)")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.add_argument("--out", help="run folder (default runs/RECIPE-sSEED-TIME)")
    p.add_argument("--seed", type=int, help="random seed (same seed, same machine: same numbers)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--auto-resume", action="store_true",
                   help="make this command restartable (e.g. under torchrun --max-restarts): if --out holds a "
                        "checkpoint of this same recipe and config, continue from it; if it holds none, start; "
                        "if it holds the finished run, print its results and exit 0. A run of another config "
                        "there is an error naming the keys that differ. Needs --out")
    p.add_argument("--quick", action="store_true", help="tiny smoke-test version of the recipe")
    p.add_argument("--data-dir", help="folder holding the dataset files (else $FFLAB_DATA_DIR; with neither: the "
                        "cache, then a download); a named folder with missing or bad files is an error")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (one line per epoch only); automatic when stderr is not a terminal")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import runs
    from ..config import apply_overrides, dumps_grouped
    from ..errors import ConfigError
    from ..experiments import read_config
    from ..recipes import get_recipe
    from ..train import fit

    if args.auto_resume and (args.resume or not args.out):
        raise ConfigError("--auto-resume needs --out DIR (the folder every restart continues) and no --resume")
    if args.resume:
        if args.overrides or args.seed is not None or args.quick:
            raise ConfigError("--resume continues a run exactly as configured; drop overrides, --seed and --quick")
        cfg, recipe_name = read_config(args.resume, note=lambda m: print(f"note: {m}", file=sys.stderr))
        out = args.resume
        if args.recipe and recipe_name and args.recipe != recipe_name:
            raise ConfigError(f"{args.resume} was trained with recipe {recipe_name!r}, not {args.recipe!r}")
    else:
        if not args.recipe:
            raise ConfigError("give a recipe name (see `fflab recipes`) or --resume RUN_DIR")
        recipe_name = args.recipe
        cfg = get_recipe(recipe_name).config(quick=args.quick)
        cfg = apply_overrides(cfg, args.overrides)
        if args.seed is not None:
            cfg = dataclasses.replace(cfg, seed=args.seed)
        out = args.out or f"runs/{recipe_name}-s{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
        if (Path(out) / "results.json").exists() and not args.auto_resume:
            raise ConfigError(f"{out} already holds a finished run; choose another --out")
        if (Path(out) / runs.STATE_FILE).exists() and not args.auto_resume:
            raise ConfigError(f"{out} holds an interrupted run: continue it with --resume {out} (or "
                              f"--auto-resume), or choose another --out")
    main = os.environ.get("RANK", "0") == "0"   # under torchrun, rank 0 speaks for the job
    say = print if main else (lambda *a, **k: None)
    resume = bool(args.resume)
    if args.auto_resume:
        state = auto_resume_state(out, recipe_name, cfg)
        if state == "finished":
            results = runs.read_json(Path(out) / "results.json")
            say(f"{out} already holds this run, finished; nothing to train")
            _say_results(say, results, out)
            return 0
        resume = state == "resume"
    say(f"recipe {recipe_name} -> {out}")
    say(dumps_grouped(cfg))
    try:
        results = fit(cfg, out, recipe=recipe_name, resume=resume, data_dir=args.data_dir,
                      # a bar redrawn with carriage returns only clutters a log file
                      progress=main and not args.no_progress and sys.stderr.isatty())
    finally:
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    _say_results(say, results, out)
    return 0


def _say_results(say, results: dict, out: str) -> None:
    say("results:", " | ".join(f"{k} {100 * v:.2f}%" for k, v in results.items() if "error" in k and "test" in k))
    say(f"wall time {results['wall_time_s']:.0f}s; run folder {out}")


def auto_resume_state(out: str | Path, recipe: str, cfg: Any) -> str:
    """What ``--auto-resume`` does with run folder ``out`` for ``recipe`` and ``cfg``: "start"
    (no checkpoint there), "resume" (a checkpoint of this run) or "finished" (its results.json).
    A checkpoint or results of another recipe or config is a ConfigError naming the keys."""
    from .. import config, runs
    from ..errors import ConfigError
    from ..experiments import read_config
    from ..runtime import concrete_dtype, resolve_device

    folder = Path(out)
    finished = (folder / "results.json").exists()
    if not finished and not (folder / runs.STATE_FILE).exists():
        return "start"
    saved, saved_recipe = read_config(folder)
    # config.json holds the dtype the run used (dtype=auto resolved on its device): compare alike
    wanted = dataclasses.replace(cfg, dtype=concrete_dtype(cfg.dtype, resolve_device(cfg.device)))
    a, b = {"recipe": saved_recipe, **config.to_dict(saved)}, {"recipe": recipe, **config.to_dict(wanted)}
    differ = [f"{k}: {a.get(k)!r} there, {b.get(k)!r} here" for k in sorted(a.keys() | b.keys())
              if a.get(k) != b.get(k)]
    if differ:
        way_out = "choose another --out" + ("" if finished else f", or continue that run as it was configured "
                                                                  f"with --resume {out}")
        raise ConfigError(f"{out} holds a {'finished' if finished else 'checkpointed'} run of another config "
                          f"({'; '.join(differ)}): {way_out}")
    return "finished" if finished else "resume"
