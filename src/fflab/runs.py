"""Run folders: config, environment, per-epoch metrics, results and atomic checkpoints.

A run folder holds
  config.json        the full config (kind + every key), enough to rebuild the model
  env.json           versions, hardware, git commit
  metrics.jsonl      one JSON line per epoch
  results.json       final metrics (written when the run ends)
  model.safetensors  model weights (and buffers), written atomically after every epoch
  state.pt           optimizer state and the epoch reached; loaded with weights_only=True
Checkpoints are written to temporary files and renamed, so an interrupted run never leaves a
half-written checkpoint; loading never executes code. The weights record the epoch of the state
written with them, and ``load_state`` refuses a pair of different epochs.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from . import config as config_mod
from .errors import CheckpointError

MODEL_FILE = "model.safetensors"
STATE_FILE = "state.pt"
SETTLING_FILE = "settling.safetensors"   # recurrent runs: how goodness settles (fflab.plot)


def atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: Path, obj: Any) -> None:
    def w(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True, default=str)
            f.write("\n")
    atomic_write(Path(path), w)


def git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _cpu_capability() -> str:
    get = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", None)
    return get() if get is not None else "unknown"


def environment() -> dict[str, Any]:
    """Versions and hardware, as printed by ``fflab env`` and stored in every run folder."""
    import numpy

    from . import __version__, runtime
    from ._engines import products
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    env = {
        "fflab": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "cpu": cpu,
        # "AMD EPYC" names both Zen 3 (AVX2) and Zen 4 (AVX-512, native bf16), whose speeds differ
        # widely, most in bf16 (BENCHMARKS.md): the vector ISA torch dispatches to tells them apart.
        "cpu_capability": _cpu_capability(),
        "native_bf16": products.NATIVE_BF16,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        # on in every run folder (fflab.runtime.flush_denormals); `fflab env` reports the shell's
        "denormals_flushed": runtime.denormals_flushed(),
        "cuda": torch.cuda.is_available(),
        "git_commit": git_commit(),
    }
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
        env["cuda_version"] = torch.version.cuda
    return env


class Run:
    """A run folder being written (or resumed)."""

    def __init__(self, path: str | Path, cfg: Any, *, recipe: str | None = None, resume: bool = False,
                 env: dict[str, Any] | None = None, writer: bool = True) -> None:
        """``env``: extra entries for env.json; ``writer=False``: a process of a data-parallel job
        other than rank 0, which reads the folder but writes nothing."""
        self.path = Path(path)
        self.cfg = cfg
        self.recipe = recipe
        self.writer = writer
        if not writer:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        if not resume:
            # A fresh run in a folder an earlier run left (stopped before its first checkpoint,
            # or restarted with another config) must not append to its metrics or leave its
            # checkpoint under this config, which a later resume would load.
            for name in ("metrics.jsonl", STATE_FILE, MODEL_FILE, "results.json"):
                (self.path / name).unlink(missing_ok=True)
            write_json(self.path / "config.json", {"recipe": recipe, **config_mod.to_dict(cfg)})
        write_json(self.path / ("env.json" if not resume else "env.resume.json"), {**environment(), **(env or {})})

    # --- metrics -----------------------------------------------------------------
    def log(self, record: dict[str, Any]) -> None:
        if not self.writer:
            return
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def truncate_metrics(self, last_epoch: int) -> None:
        """On resume, drop metric lines written after the checkpoint we resume from."""
        p = self.path / "metrics.jsonl"
        if not self.writer or not p.exists():
            return
        keep = [ln for ln in read_metrics(self.path) if ln.get("epoch", 0) <= last_epoch]
        atomic_write(p, lambda tmp: Path(tmp).write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in keep)))

    def write_results(self, results: dict[str, Any]) -> None:
        if self.writer:
            write_json(self.path / "results.json", results)

    # --- checkpoints ---------------------------------------------------------------
    def save_checkpoint(self, modules: dict[str, torch.nn.Module], state: dict[str, Any]) -> None:
        if not self.writer:
            return
        # Both files are written in full before either is renamed, so a process killed while
        # writing (torchrun stops every worker when one fails) leaves the previous checkpoint;
        # only a kill between the two renames can split the pair, and load_state detects that.
        epoch = {"epoch": str(state["epoch"])} if "epoch" in state else {}
        with staged(self.path / STATE_FILE, lambda tmp: torch.save(state, tmp)) as commit_state:
            save_model(self.path / MODEL_FILE, modules, metadata=epoch)
            commit_state()


def save_model(path: Path, modules: dict[str, torch.nn.Module], metadata: dict[str, str] | None = None) -> None:
    """Flatten several modules' state dicts as ``name.key`` into one safetensors file, atomically."""
    tensors = {f"{name}.{k}": v.detach().cpu().contiguous() for name, m in modules.items()
               for k, v in m.state_dict().items()}
    meta = {"format": "fflab", **(metadata or {})}
    atomic_write(Path(path), lambda tmp: save_file(tensors, tmp, metadata=meta))


@contextlib.contextmanager
def staged(path: Path, write) -> Iterator[Callable[[], None]]:
    """Write ``path``'s new content to a temporary file now; the block calls the function it is
    given to rename it into place (if the block fails, or never calls it, the file is unchanged)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        yield lambda: os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_model(path: Path, modules: dict[str, torch.nn.Module]) -> None:
    """Load a file written by ``save_model`` into the given modules (strict: every key must match)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        tensors = load_file(str(path))
    except Exception as e:  # safetensors raises several types for a damaged file
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from None
    for name, m in modules.items():
        prefix = name + "."
        sd = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            m.load_state_dict(sd, strict=True)
        except RuntimeError as e:
            raise CheckpointError(f"checkpoint {path} does not match the model ({name}): {e}") from None


def load_state(run_dir: Path) -> dict[str, Any]:
    p = Path(run_dir) / STATE_FILE
    if not p.exists():
        raise CheckpointError(f"{run_dir} has no {STATE_FILE}: nothing to resume from")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot read {p}: {e}") from None
    model = Path(run_dir) / MODEL_FILE
    try:
        with safe_open(str(model), "pt") as f:
            weights_epoch = (f.metadata() or {}).get("epoch")
    except Exception:   # a missing or damaged model file is load_model's to report
        weights_epoch = None
    # Folders written before the weights recorded their epoch have nothing to compare.
    if weights_epoch is not None and weights_epoch != str(state.get("epoch")):
        raise CheckpointError(f"{run_dir}: {MODEL_FILE} is of epoch {weights_epoch} but {STATE_FILE} of epoch "
                              f"{state.get('epoch')} (the run was stopped while saving): nothing consistent "
                              f"to resume from")
    return state


def read_json(path: str | Path) -> Any:
    """A JSON file of a run folder; a damaged one is a ``CheckpointError`` that names it."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:   # ValueError covers JSONDecodeError and UnicodeDecodeError
        raise CheckpointError(f"cannot read {path}: {e}") from None


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of metrics.jsonl ([] if there is none). A last line cut short (the run was
    killed while writing it) is dropped, so such a run still resumes; a damaged line before the
    last is a ``CheckpointError`` naming the file and line."""
    p = Path(run_dir) / "metrics.jsonl"
    if not p.exists():
        return []
    lines = [ln for ln in p.read_text(errors="replace").splitlines() if ln.strip()]
    records = []
    for i, ln in enumerate(lines):
        try:
            rec = json.loads(ln)
            if not isinstance(rec, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:
            if i == len(lines) - 1:
                break
            raise CheckpointError(f"{p} line {i + 1} is not a metrics record: {e}") from None
        records.append(rec)
    return records
