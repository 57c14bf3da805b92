"""``fflab recipes``: every recipe with the claim it reproduces."""
from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("recipes", help="list recipes and the paper claims they reproduce")
    p.add_argument("name", nargs="?", help="show one recipe's full docstring and config")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..config import dumps
    from ..recipes import all_recipes, get_recipe
    if args.name:
        r = get_recipe(args.name)
        print(f"{r.name}  [{r.section}]\n  claim: {r.claim}\n\n{r.doc}\n\nconfig:\n{dumps(r.config())}")
        return 0
    for r in sorted(all_recipes().values(), key=lambda r: r.name):
        print(f"{r.name:28s} [{r.section}] {r.claim}")
    return 0
