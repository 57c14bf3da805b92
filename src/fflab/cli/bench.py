"""``fflab bench``: FF training speed against raw matmul and backprop on this machine."""
from __future__ import annotations

import argparse
import json


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="measure FF training speed against raw matmul and backprop on this machine")
    p.add_argument("--recipe", help="time the training step of this recipe's own net instead (e.g. "
                                    "cifar-ff-minssq-2l); overrides as key=value after it")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="with --recipe: config overrides")
    p.add_argument("--hidden", default="1000,1000,1000", help="hidden widths, e.g. 2000x4")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--dtype", choices=["float32", "bfloat16", "auto"], default="float32",
                   help="auto: bfloat16 where the device multiplies bf16 natively, else float32")
    p.add_argument("--negatives", choices=["hard", "uniform"], default="hard")
    p.add_argument("--engine", choices=["auto", "shared", "analytic", "autograd"], default="auto")
    p.add_argument("--neutral-every", type=int, default=1,
                   help="neutral pass on every k-th step only (hard negatives from cached probabilities)")
    p.add_argument("--optimizer", choices=["adam", "sgd"], default="adam",
                   help="optimizer of the FF layers, the head and the BP baseline")
    p.add_argument("--compile", action="store_true", help="torch.compile the shared engine's step (engine shared)")
    p.add_argument("--steps", type=int, default=30, help="training steps per repetition")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON ('-' for stdout only)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..bench import format_table, run_benchmark
    from ..config import apply_overrides
    from ..errors import ConfigError
    from ..experiments.supervised import SupervisedFFConfig
    if args.threads < 0 or args.steps < 1 or args.reps < 1:
        raise ConfigError(f"--threads must be >= 0, --steps and --reps >= 1 "
                          f"(got {args.threads}, {args.steps}, {args.reps})")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.recipe:
        return _recipe(args)
    if args.overrides:
        raise ConfigError("key=value overrides go with --recipe")
    # parsed and range-checked as the config key is (e.g. 2000x4; a width of 0 is an error)
    hidden = apply_overrides(SupervisedFFConfig(), [f"hidden={args.hidden}"]).hidden
    res = run_benchmark(hidden, batch_size=args.batch_size, dtype=args.dtype, negatives=args.negatives,
                        steps=args.steps, reps=args.reps, device=args.device,
                        engine=args.engine, neutral_every=args.neutral_every,
                        optimizer=args.optimizer, compile=args.compile)
    if args.json == "-":
        print(json.dumps(res, indent=2))
        return 0
    print(format_table(res))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
        print(f"wrote {args.json}")
    return 0


def _recipe(args: argparse.Namespace) -> int:
    from ..bench import recipe_step_time
    from ..config import apply_overrides
    from ..recipes import get_recipe
    cfg = apply_overrides(get_recipe(args.recipe).config(), args.overrides)
    res = recipe_step_time(cfg, steps=args.steps, reps=args.reps)
    res["recipe"] = args.recipe
    if args.json == "-":
        print(json.dumps(res, indent=2))
        return 0
    env, ms = res["env"], res["ms_per_step"]
    print(f"fflab bench --recipe {args.recipe}: {res['config']}, images {'x'.join(map(str, res['image_shape']))}, "
          f"batch {res['batch_size']}, dtype {res['dtype']} ({args.steps} steps x {args.reps} reps)")
    print(f"hardware: {env['cpu']} ({env.get('cpu_capability', '?')}), {env['torch_threads']} torch threads; "
          f"torch {env['torch']}, fflab {env['fflab']}")
    print(f"training step: {ms['median']:.1f} ms [{ms['min']:.1f}-{ms['max']:.1f}], "
          f"{res['images_per_s']:.0f} images/s, {res['minutes_per_epoch']:.1f} min per "
          f"{res['epoch_images']}-image epoch")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
        print(f"wrote {args.json}")
    return 0

