"""Fault tolerance: ``fflab train RECIPE --out DIR --auto-resume`` is one command line that can be
rerun after any interruption, as ``torchrun --max-restarts`` reruns it when a worker dies.

The torchrun test trains on a tiny folder of PNG digits (``dataset=folder:PATH``): the MNIST
reader checks the real files' sizes and MD5s, so a worker process cannot be pointed at
synthetic IDX files, while an image folder is read as it is.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fflab import runs
from fflab.cli.main import main
from fflab.cli.train import auto_resume_state
from fflab.config import apply_overrides
from fflab.errors import CheckpointError, ConfigError
from fflab.recipes import get_recipe
from fflab.train import fit

QUICK = ["threads=1", "epochs=2"]


def _demo(overrides=QUICK):
    return apply_overrides(get_recipe("demo").config(quick=True), list(overrides))


# ---------------------------------------------------------------------------------- the flag
def test_auto_resume_starts_resumes_finishes_and_refuses_another_config(tmp_path, tiny_mnist, capsys):
    out = tmp_path / "run"
    cmd = ["train", "demo", "--quick", "--out", str(out), "--no-progress", "--auto-resume", *QUICK]
    # no run folder yet: start
    assert auto_resume_state(out, "demo", _demo()) == "start"
    # a checkpoint of this run (dtype=auto in the command, the dtype it resolved to in config.json)
    fit(_demo(), str(out), recipe="demo", progress=False, log=lambda s: None, stop_after_epoch=1)
    assert auto_resume_state(out, "demo", _demo()) == "resume"
    # a checkpoint of another config: an error naming each key that differs, the folder untouched
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert main([*cmd, "lr=0.01", "batch_size=50"]) == 2
    err = capsys.readouterr().err
    assert "another config" in err and "batch_size: 100 there, 50 here" in err and "lr: 0.001 there, 0.01 here" in err
    assert "--resume" in err and "epochs" not in err
    with pytest.raises(ConfigError, match="recipe: 'demo' there, 'ff-fast' here"):
        auto_resume_state(out, "ff-fast", _demo())
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # the same command: continues after epoch 1 to the end, one metrics line per epoch
    assert main(cmd) == 0
    assert "resuming" in capsys.readouterr().out
    assert [m["epoch"] for m in runs.read_metrics(out)] == [1, 2]
    results = json.loads((out / "results.json").read_text())
    # finished: rerunning it says so and exits 0 with the results, training nothing
    assert auto_resume_state(out, "demo", _demo()) == "finished"
    assert main(cmd) == 0
    said = capsys.readouterr().out
    assert "already holds this run, finished" in said and f"{100 * results['test_error_goodness']:.2f}%" in said
    assert json.loads((out / "results.json").read_text()) == results
    with pytest.raises(ConfigError, match=r"finished run of another config \(seed: 0 there, 3 here\): choose another "
                                          r"--out$"):
        auto_resume_state(out, "demo", _demo([*QUICK, "seed=3"]))
    # it needs --out (the default folder is new on every call) and does not go with --resume
    assert main(["train", "demo", "--quick", "--auto-resume"]) == 2
    assert main(["train", "--resume", str(out), "--out", str(out), "--auto-resume"]) == 2
    assert "--auto-resume needs --out" in capsys.readouterr().err


def test_fresh_start_drops_what_an_earlier_run_left(tmp_path, tiny_mnist):
    """A folder whose run stopped between its first metrics line and its first checkpoint (or a
    plain rerun over an interrupted folder) starts clean: no duplicate epochs, no stale state."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "train_loss": 9.0}) + "\n")
    assert auto_resume_state(out, "demo", _demo()) == "start"
    assert main(["train", "demo", "--quick", "--out", str(out), "--no-progress", "--auto-resume", *QUICK]) == 0
    assert [m["epoch"] for m in runs.read_metrics(out)] == [1, 2]
    assert runs.read_metrics(out)[0]["train_loss"] != 9.0


def test_run_stopped_after_its_last_checkpoint_finishes_on_resume(tmp_path, tiny_mnist):
    """Killed after the last epoch's checkpoint but before results.json: the restart writes the
    results an uninterrupted run writes, training nothing more."""
    full = fit(_demo(), str(tmp_path / "full"), recipe="demo", progress=False, log=lambda s: None)
    out = tmp_path / "cut"
    fit(_demo(), str(out), recipe="demo", progress=False, log=lambda s: None)
    (out / "results.json").unlink()
    assert auto_resume_state(out, "demo", _demo()) == "resume"
    assert main(["train", "demo", "--quick", "--out", str(out), "--no-progress", "--auto-resume", *QUICK]) == 0
    res = json.loads((out / "results.json").read_text())
    drop = ("wall_time_s",)
    assert {k: v for k, v in res.items() if k not in drop} == {k: v for k, v in full.items() if k not in drop}
    assert [m["epoch"] for m in runs.read_metrics(out)] == [1, 2]


def test_a_checkpoint_split_by_a_kill_is_refused(tmp_path, tiny_mnist):
    """Weights and state are renamed into place back to back; were a run killed between the two
    renames, the weights' epoch would not be the state's, and resuming must not go on."""
    out = tmp_path / "r"
    fit(_demo(), str(out), recipe="demo", progress=False, log=lambda s: None, stop_after_epoch=1)
    state = torch.load(out / runs.STATE_FILE, weights_only=True)
    torch.save({**state, "epoch": 0}, out / runs.STATE_FILE)
    with pytest.raises(CheckpointError, match="model.safetensors is of epoch 1 but state.pt of epoch 0"):
        fit(_demo(), str(out), recipe="demo", resume=True, progress=False, log=lambda s: None)


# ---------------------------------------------------------------------------------- torchrun
def _gloo() -> bool:
    import torch.distributed as dist
    return dist.is_available() and dist.is_gloo_available()


def _image_folder(root: Path, n_train: int = 40, n_test: int = 10) -> Path:
    """Sparse 28 x 28 greyscale digits, one prototype per class with 20% of its pixels dropped."""
    from PIL import Image
    rng = np.random.default_rng(0)
    protos = rng.random((10, 28, 28)) > 0.85
    for split, n in (("train", n_train), ("test", n_test)):
        for c in range(10):
            d = root / split / f"digit{c}"
            d.mkdir(parents=True)
            for i in range(n):
                x = (protos[c] * (rng.random((28, 28)) > 0.2) * 255).astype(np.uint8)
                Image.fromarray(x, mode="L").save(d / f"{i:03d}.png")
    return root


def _workers(out: Path) -> dict[int, int]:
    """pid -> rank of the live torchrun workers training into ``out``."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            environ = dict(e.split(b"=", 1) for e in (proc / "environ").read_bytes().split(b"\0") if b"=" in e)
        except OSError:   # gone, or not ours to read
            continue
        if str(out).encode() in cmdline and b"RANK" in environ:
            found[int(proc.name)] = int(environ[b"RANK"])
    return found


def _torchrun(out: Path, folder: Path, epochs: int) -> subprocess.Popen:
    """The job, its output in ``out``.log (a file: a pipe would stay open as long as any worker
    lives, and a worker's output may not be wanted once torchrun has exited)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "--max-restarts", "1", "-m", "fflab", "train", "demo", "--quick", "--out", str(out), "--no-progress",
           "--auto-resume", "threads=1", f"epochs={epochs}", "batch_size=20", "train_eval_size=40",
           f"dataset=folder:{folder}"]
    # Without it the restarted workers join through the store the first ones used and may read
    # their stale gloo addresses: "connectFullMesh failed ... Connection refused", or a hang.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
    with open(f"{out}.log", "w") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)


def _finish(p: subprocess.Popen, out: Path, timeout: float = 120) -> tuple[int | None, str]:
    """Wait for the job; stop it and its workers if it overruns. (exit code, output)."""
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.terminate()   # torchrun stops its workers on SIGTERM
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    for pid in _workers(out):   # none should be left; if any is, it must not outlive the test
        os.kill(pid, signal.SIGKILL)
    return p.returncode, Path(f"{out}.log").read_text()


@pytest.mark.skipif(not sys.platform.startswith("linux") or not _gloo(),
                    reason="needs torch.distributed with gloo, and /proc to find the worker to kill")
def test_torchrun_job_survives_a_killed_worker(tmp_path):
    """``torchrun --max-restarts 1 ... --auto-resume`` with rank 1 SIGKILLed from outside after the
    first checkpoint: torchrun restarts both workers with the same command, they resume from the
    checkpoint, and the job exits 0 with one metrics line per epoch and the weights and errors of
    an uninterrupted job (resuming restores weights, Adam's state and the epoch's random stream,
    so the arithmetic is the same; the tolerance only spares float rounding). Restarts need a c10d
    rendezvous (``--standalone`` here) and ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` (README)."""
    folder = _image_folder(tmp_path / "digits")
    epochs = 5
    ref, cut = tmp_path / "uninterrupted", tmp_path / "killed"
    rc, text = _finish(_torchrun(ref, folder, epochs), ref)
    assert rc == 0, text

    p = _torchrun(cut, folder, epochs)
    try:
        deadline = time.monotonic() + 60
        rank1 = None
        while time.monotonic() < deadline and p.poll() is None:
            if rank1 is None:
                rank1 = next((pid for pid, r in _workers(cut).items() if r == 1), None)
            elif (cut / runs.STATE_FILE).exists():   # epoch 1's checkpoint is in place
                os.kill(rank1, signal.SIGKILL)
                break
            time.sleep(0.005)
        else:
            pytest.fail("never saw rank 1 and the first checkpoint")
    finally:
        rc, text = _finish(p, cut)
    assert rc == 0, text
    resumed = [ln for ln in text.splitlines() if ln.startswith("resuming")]
    assert len(resumed) == 1, text   # the kill landed mid-run, and the restart resumed
    assert 1 <= int(resumed[0].rsplit(" ", 1)[1]) < epochs
    assert (cut / "env.resume.json").exists()

    assert [m["epoch"] for m in runs.read_metrics(cut)] == list(range(1, epochs + 1))
    for a, b in zip(runs.read_metrics(cut), runs.read_metrics(ref)):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6, abs=0)
    from safetensors.torch import load_file
    got, want = load_file(str(cut / runs.MODEL_FILE)), load_file(str(ref / runs.MODEL_FILE))
    assert got.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=1e-5, msg=k)
    res_cut, res_ref = (json.loads((d / "results.json").read_text()) for d in (cut, ref))
    assert {k: v for k, v in res_cut.items() if "error" in k} == {k: v for k, v in res_ref.items() if "error" in k}
    assert res_cut["epochs"] == epochs and not _workers(cut)
