"""``fflab eval RUN_DIR``: reload a run's checkpoint (safetensors, no code executed) and evaluate."""
from __future__ import annotations

import argparse
import json


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a run folder's checkpoint")
    p.add_argument("run_dir")
    p.add_argument("--split", choices=["test", "train"], default="test")
    p.add_argument("--data-dir")
    p.add_argument("--device", help="evaluate there instead of on the run's own device (e.g. cpu for a "
                                     "run trained with device=cuda)")
    p.add_argument("--json", action="store_true", help="print JSON only")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..train import evaluate_run
    res = evaluate_run(args.run_dir, data_dir=args.data_dir, split=args.split, device=args.device)
    if args.json:
        print(json.dumps(res, indent=2, sort_keys=True))
    else:
        for k, v in res.items():
            print(f"{args.split} {k}: {100 * v:.2f}%")
    return 0
