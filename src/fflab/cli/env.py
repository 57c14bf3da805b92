"""``fflab env``: versions and hardware, to paste into a bug report or a results table."""
from __future__ import annotations

import argparse
import json


def add_parser(sub) -> None:
    p = sub.add_parser("env", help="print versions and hardware")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..runs import environment
    print(json.dumps(environment(), indent=2))
    return 0
