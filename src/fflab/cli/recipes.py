"""``fflab recipes``: every recipe with the claim it reproduces."""
from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("recipes", help="list recipes and the paper claims they reproduce")
    p.add_argument("name", nargs="?", help="show one recipe's full docstring and config")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..config import dumps_grouped
    from ..recipes import all_recipes, get_recipe
    if args.name:
        r = get_recipe(args.name)
        print(f"{r.name}  [paper, {_section(r.section)}]\n  claim: {r.claim}\n\n{r.doc}\n\n"
              f"config (override any key with key=value):\n{dumps_grouped(r.config())}")
        return 0
    for r in all_recipes().values():   # in the paper's order
        print(f"{r.name:22s} [{_section(r.section):11s}] {r.claim}")
    return 0


def _section(section: str) -> str:
    """"3.3" -> "section 3.3"; a named section ("CIFAR-10") as it is."""
    return f"section {section}" if section[:1].isdigit() else section
