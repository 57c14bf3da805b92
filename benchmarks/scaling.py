"""Images per second of one process against torchrun jobs of N processes, data-parallel and
layer-pipelined, timed in interleaved rounds: the table of BENCHMARKS.md "Several processes (torchrun)".

    python benchmarks/scaling.py --recipes demo ff-paper-4x2000 --nproc 2 --rounds 2 \\
        --out results/bench/CPU-COMMIT-scaling

Each run trains ``train_subset`` images for 2 epochs with ``threads=1`` per process (so N processes
use N cores) and reads the second epoch's time (no compiling, no first-touch costs) and the
bytes each step sent (``sent_mb_per_step``, measured by fflab, summed over the processes).
Needs MNIST in ``--data-dir`` or ``$FFLAB_DATA_DIR``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path


def run_one(recipe: str, mode: str, nproc: int, out: Path, images: int, extra: list[str]) -> dict:
    if out.exists():
        shutil.rmtree(out)
    keys = [f"train_subset={images}", "epochs=2", "eval_every=2", "test_subset=500", "train_eval_size=200",
            "threads=1", "compile=false", *extra]
    fflab = [sys.executable, "-m", "fflab", "train", recipe, "--out", str(out), "--no-progress"]
    if mode == "single":
        cmd = [*fflab, *keys]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "fflab", "train", recipe, "--out", str(out), "--no-progress", *keys, f"parallel={mode}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if log.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{log.stdout[-2000:]}\n{log.stderr[-4000:]}")
    (out.parent / f"{out.name}.log").write_text(log.stdout + log.stderr)
    last = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()][-1]
    return {"recipe": recipe, "mode": mode, "processes": 1 if mode == "single" else nproc,
            "epoch_time_s": last["epoch_time_s"], "images_per_s": images / last["epoch_time_s"],
            "sent_mb_per_step": last.get("sent_mb_per_step", 0.0), "test_error_onepass": last.get("test_error_onepass")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipes", nargs="+", default=["demo", "ff-paper-4x2000"])
    p.add_argument("--modes", nargs="+", default=["single", "data", "pipeline"])
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--images", type=int, default=6000)
    p.add_argument("--out", default="/tmp/fflab-scaling")
    p.add_argument("extra", nargs="*", metavar="key=value", help="more overrides for every run")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for r in range(args.rounds):   # rounds interleave the modes, so drift hits all alike
        for recipe in args.recipes:
            for mode in args.modes:
                row = run_one(recipe, mode, args.nproc, out / f"{recipe}-{mode}-{r + 1}", args.images, args.extra)
                rows.append(row)
                print(json.dumps(row), flush=True)
    (out / "scaling.json").write_text(json.dumps(rows, indent=1))
    print("\n| net | mode | processes | images/s (rounds) | speed-up | MB sent per step |")
    print("|---|---|---|---|---|---|")
    for recipe in args.recipes:
        base = [x["images_per_s"] for x in rows if x["recipe"] == recipe and x["mode"] == "single"]
        ref = sum(base) / len(base) if base else None
        for mode in args.modes:
            sel = [x for x in rows if x["recipe"] == recipe and x["mode"] == mode]
            ips = [x["images_per_s"] for x in sel]
            mean = sum(ips) / len(ips)
            speed = f"{mean / ref:.2f} x" if ref else "-"
            print(f"| {recipe} | {mode} | {sel[0]['processes']} | {' / '.join(f'{v:.0f}' for v in ips)} | {speed} "
                  f"| {sel[0]['sent_mb_per_step']:.2f} |")


if __name__ == "__main__":
    main()
