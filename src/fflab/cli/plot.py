"""``fflab plot``: figures from run folders, and the hybrid-negatives gallery.

    fflab plot RUN_DIR                  curves, goodness, receptive fields (recurrent runs: iterations,
                                        settling) into RUN_DIR
    fflab plot RUN_A RUN_B ... [--out F] the same for each run, plus their test errors on one plot
    fflab plot negatives [--out F] [--blur-passes N] [--data-dir DIR]
                                        hybrid negatives (paper section 3.2) of MNIST training images
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError

NEGATIVES = "negatives"
COMPARE_METRICS = ("test_error_goodness", "test_error_onepass", "test_error_readout", "test_error_char", "test_error")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "plot", help="plot run folders (or `fflab plot negatives`: the hybrid-negatives gallery)",
        description="Write PNGs into each run folder: curves.png (train/test error and loss per epoch), "
                    "goodness.png, receptive_fields.png and, for recurrent runs, iterations.png and "
                    "settling.png. With several runs (or --out) also a comparison of their test errors. "
                    "`fflab plot negatives` writes a gallery of hybrid negative images instead "
                    "(use ./negatives for a run folder of that name).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders, or the word `negatives`")
    p.add_argument("--out", metavar="FILE", default=None,
                   help="comparison plot (default compare.png when several runs are given); "
                        "for `negatives`, the gallery (default hybrid_negatives.png)")
    p.add_argument("--metric", default=None,
                   help="metric to compare (default: each run's first of " + ", ".join(COMPARE_METRICS) + ")")
    p.add_argument("--blur-passes", type=int, default=None, metavar="N",
                   help="`negatives` only: blur passes of the masks (default 6)")
    p.add_argument("--data-dir", default=None, metavar="DIR", help="`negatives` only: MNIST data folder")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    if args.run_dirs == [NEGATIVES]:
        return _negatives(args)
    if NEGATIVES in args.run_dirs:
        raise ConfigError("`negatives` takes no run folders: use `fflab plot negatives` alone "
                          "(or ./negatives for a run folder of that name)")
    if args.blur_passes is not None or args.data_dir is not None:
        raise ConfigError("--blur-passes and --data-dir apply only to `fflab plot negatives`")
    from .. import plot

    for d in args.run_dirs:  # check every folder before drawing anything
        plot.read_run_metrics(d)
    for d in args.run_dirs:
        for path in plot.plot_run(d):
            print(path)
    if len(args.run_dirs) > 1 or args.out is not None:
        metric = args.metric if args.metric is not None else COMPARE_METRICS
        print(plot.plot_compare(args.run_dirs, args.out or "compare.png", metric=metric))
    return 0


def _negatives(args: argparse.Namespace) -> int:
    if args.metric is not None:
        raise ConfigError("--metric applies only to run folders")
    passes = 6 if args.blur_passes is None else args.blur_passes
    if passes < 0:
        raise ConfigError(f"--blur-passes must be >= 0, got {passes}")
    from .. import data, plot

    x = data.load_mnist("mnist", data_dir=args.data_dir)["x_train"][:64]   # (64, 784) in [0, 1]
    out = Path(args.out or "hybrid_negatives.png")
    print(plot.negatives_gallery(x, out, n=8, blur_passes=passes, seed=0))
    return 0
