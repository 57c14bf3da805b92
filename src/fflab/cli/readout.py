"""``fflab readout RUN_DIR``: fit the linear readout of an unsupervised FF run on frozen features."""
from __future__ import annotations

import argparse
import json


def _ints(s: str) -> list[int]:
    return [int(v) for v in s.split(",") if v.strip()]


def _floats(s: str) -> list[float]:
    return [float(v) for v in s.split(",") if v.strip()]


def add_parser(sub) -> None:
    p = sub.add_parser("readout", help="refit an unsupervised run's linear readout on frozen features",
                       description="Extract the normalized activities of the chosen hidden layers of a "
                                   "trained unsupervised FF run, fit an L2-regularized softmax readout by "
                                   "L-BFGS, choosing the penalty on a validation split of the training "
                                   "set, and report the test error once. Writes RUN_DIR/readout.json.")
    p.add_argument("run_dir")
    p.add_argument("--layers", type=_ints, help="0-based hidden layers, e.g. 1,2,3 (default: the run's "
                                               "readout_layers)")
    p.add_argument("--weight-decay", type=_floats, default=[0.0, 1e-5, 1e-4, 1e-3, 1e-2],
                   help="comma-separated L2 penalties to choose from (default 0,1e-5,1e-4,1e-3,1e-2)")
    p.add_argument("--val-size", type=int, default=5000, help="training cases held out to choose the penalty")
    p.add_argument("--max-iter", type=int, default=300, help="L-BFGS iterations per fit")
    p.add_argument("--data-dir")
    p.add_argument("--device", help="run there instead of on the run's own device (e.g. cpu for a run "
                                     "trained with device=cuda)")
    p.add_argument("--json", action="store_true", help="print JSON only")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..readout import readout_run
    res = readout_run(args.run_dir, layers=args.layers, weight_decays=args.weight_decay,
                      val_size=args.val_size, max_iter=args.max_iter, data_dir=args.data_dir,
                      device=args.device)
    if args.json:
        print(json.dumps(res.as_dict(), indent=2, sort_keys=True))
        return 0
    for wd, err in res.val_errors.items():
        print(f"weight_decay {wd}: validation error {100 * err:.2f}%")
    print(f"layers {res.layers}: chosen weight_decay {res.weight_decay:g}; train error "
          f"{100 * res.train_error:.2f}%, test error {100 * res.test_error:.2f}% ({res.seconds:.0f}s)")
    return 0
