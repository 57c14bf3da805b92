"""Aesop's fables as the paper's character strings (paper section 7).

The paper trains next-character prediction on "248 strings of 100 characters" from Aesop's fables,
over 30 symbols: the 26 lower-case letters, space, comma, semicolon and full stop. It says neither
which text nor how the strings were cut, so this module fixes both and documents them:

* Text: V. S. Vernon Jones's translation (1912, public domain), one ALL-CAPS title line before
  each fable. The known copy (UTF-8 with BOM, no Project Gutenberg header) has sha256
  ``AESOP_SHA256``; the same translation is Project Gutenberg ebook #11339.
* Cleaning: ``clean_text`` (rules in its docstring), a pure function.
* DEVIATION (string choice, not stated in the paper): string i is the first 100 characters of the
  i-th fable (file order) whose cleaned text has at least 100 characters, for i < 248. Every
  string therefore starts at the start of a fable, so the 10-character context is always a
  fable opening, and no two strings overlap. The known copy has 284 fables, all long enough; the
  36 after the first 248 are not used by the paper's setup and can serve as held-out strings
  (``make_strings(text, num_strings=None)`` returns all of them).

Sources, tried in order by ``load_aesop``: an explicit path; the data directory
(``data_dir`` or ``$FFLAB_DATA_DIR``: ``aesop/aesop.txt`` or ``aesop.txt``); the user cache
(``$FFLAB_CACHE_DIR``, else ``$XDG_CACHE_HOME/fflab``, else ``~/.cache/fflab``); the Project
Gutenberg text over HTTPS, saved into the cache atomically.

Integrity: a local file must have sha256 ``AESOP_SHA256`` (pass ``sha256=None`` to accept another
copy). A downloaded Gutenberg text has a licence header, front matter and line wrapping that
change over the years, so its bytes cannot be pinned; instead it must contain the cleaned
opening of the Vernon Jones "Fox and the Grapes" (so another translation or an error page is
rejected). Every source, local or downloaded, must clean to at least ``num_strings`` fables of
``length`` characters. In any source, cleaned fables before the one that starts with that
opening are front matter (introduction, contents) and are dropped.
"""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
import unicodedata
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import DataError

ALPHABET = "abcdefghijklmnopqrstuvwxyz ,;."
"""The paper's 30 symbols, in a fixed order: index i in ``encode`` is ``ALPHABET[i]``."""
_INDEX = {c: i for i, c in enumerate(ALPHABET)}

NUM_STRINGS = 248
LENGTH = 100
AESOP_SHA256 = "4f1e7463b5fd19c55a9f538703a24be5ae3f3f04585d41c7266aba79d0fac8f9"
GUTENBERG_URLS = (
    "https://www.gutenberg.org/cache/epub/11339/pg11339.txt",
    "https://www.gutenberg.org/files/11339/11339-0.txt",
)
# The cleaned opening of the first fable in the Vernon Jones translation: a downloaded text
# without it is another translation (or an error page) and is rejected.
_MARKER = "a hungry fox saw some fine bunches of grapes"
_CACHE_NAME = "pg11339.txt"
_TIMEOUT_S = 20.0

_GUTENBERG_START = re.compile(r"^\*\*\*\s*START OF (?:THE|THIS) PROJECT GUTENBERG.*$", re.I | re.M)
_GUTENBERG_END = re.compile(
    r"^(?:\*\*\*\s*END OF (?:THE|THIS) PROJECT GUTENBERG|End of (?:the )?Project Gutenberg).*$",
    re.I | re.M)
_BRACKETED = re.compile(r"\[[^\]]*\]")  # [Illustration: ...], transcriber's notes; may span lines
_TRANSLIT = {"æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "ß": "ss"}
_DASHES = re.compile(r"[-\u2010-\u2015\u2212]+")  # hyphen, en/em dashes, minus, "--"
_SENTENCE_END = re.compile(r"[!?:]")
_DROP = re.compile(r"[^a-z ,;.]")
# A run of punctuation marks, possibly with spaces between them ("., ", ". ."): keep the first.
_PUNCT_RUN = re.compile(r"([,;.])[ ,;.]*[,;.]")
_SPACE_BEFORE_PUNCT = re.compile(r" +([,;.])")
_SPACES = re.compile(r" {2,}")


def _is_title(line: str) -> bool:
    """An ALL-CAPS title line: at least two letters and no lower-case letter."""
    letters = [c for c in line if c.isalpha()]
    return len(letters) >= 2 and not any(c.islower() for c in letters)


def _clean_fable(body: str) -> str:
    for src, dst in _TRANSLIT.items():
        body = body.replace(src, dst)
    # Accented letters (e.g. "é") keep their base letter: NFKD splits off the accent, rule 8 drops it.
    body = unicodedata.normalize("NFKD", body).lower()
    body = _SENTENCE_END.sub(".", body)
    body = _DASHES.sub(" ", body)
    body = re.sub(r"\s", " ", body)  # newlines, tabs
    body = _DROP.sub("", body)
    body = _SPACES.sub(" ", body)
    body = _SPACE_BEFORE_PUNCT.sub(r"\1", body)
    # The first mark of a run wins ("Help!", he cried -> "help. he cried"); the space after the
    # run is not part of it and stays.
    body = _PUNCT_RUN.sub(r"\1", body)
    body = _SPACES.sub(" ", body)
    return body.lstrip(" ,;.").rstrip(" ")


def clean_text(raw: str) -> str:
    """Clean a plain-text copy of the fables. Returns one cleaned fable per line.

    Rules, applied in this order:

    1. Remove every BOM (U+FEFF); turn ``\\r\\n`` and ``\\r`` into ``\\n``.
    2. If Project Gutenberg markers are present, keep only the text between the
       ``*** START OF ...`` line and the ``*** END OF ...`` (or ``End of the Project Gutenberg``)
       line.
    3. Remove text in square brackets (Gutenberg ``[Illustration: ...]`` and transcriber's notes).
    4. Drop ALL-CAPS title lines (at least two letters, none lower-case). Each one ends the
       previous fable and starts a new one; text before the first title (front matter) is a
       fable of its own. Fables that clean to nothing are dropped.
    5. Transliterate ``æ œ ß`` to ``ae oe ss`` and strip accents (NFKD), then lower-case.
    6. Map the other sentence punctuation ``! ? :`` to ``.``.
    7. Map dashes (``-``, ``--``, en/em dashes) and all whitespace (newlines, tabs) to a space.
    8. Drop every other character: quotes, apostrophes (``don't`` -> ``dont``), digits,
       underscores, brackets.
    9. Collapse runs of spaces to one, remove spaces before ``, ; .``, and collapse a run of
       punctuation marks (with or without spaces between them) to its first mark.
    10. Strip spaces from both ends of each fable and punctuation from its start.

    Inside a fable the result uses only ``ALPHABET``; fables are separated by ``\\n``.
    """
    text = raw.replace("\ufeff", "").replace("\r\n", "\n").replace("\r", "\n")
    start = _GUTENBERG_START.search(text)
    if start:
        text = text[start.end():]
    end = _GUTENBERG_END.search(text)
    if end:
        text = text[:end.start()]
    text = _BRACKETED.sub("", text)

    fables: list[list[str]] = [[]]
    for line in text.split("\n"):
        if _is_title(line):
            fables.append([])
        else:
            fables[-1].append(line)
    cleaned = (_clean_fable("\n".join(lines)) for lines in fables)
    return "\n".join(f for f in cleaned if f)


def make_strings(text: str, num_strings: int | None = NUM_STRINGS, length: int = LENGTH, *,
                 by: str = "fable") -> list[str]:
    """Cut cleaned text (``clean_text`` output) into ``num_strings`` strings of ``length`` chars.

    ``by="fable"`` (default, see the module docstring): string i is the first ``length``
    characters of the i-th fable (line of ``text``) that has at least ``length`` characters.
    ``by="chunk"``: the fables joined by single spaces, cut into consecutive non-overlapping
    chunks from the start. ``num_strings=None`` returns as many strings as the text gives.
    Raises DataError if the text gives fewer than ``num_strings`` strings.
    """
    if length < 1:
        raise ValueError(f"length must be positive, got {length}")
    if by == "fable":
        strings = [f[:length] for f in text.split("\n") if len(f) >= length]
    elif by == "chunk":
        joined = " ".join(text.split("\n"))
        strings = [joined[i:i + length] for i in range(0, len(joined) - length + 1, length)]
    else:
        raise ValueError(f"unknown by={by!r}; choose 'fable' or 'chunk'")
    if num_strings is None:
        return strings
    if len(strings) < num_strings:
        raise DataError(f"the text gives only {len(strings)} strings of {length} characters "
                        f"(by={by!r}); {num_strings} are needed")
    return strings[:num_strings]


def encode(strings: Sequence[str]) -> torch.Tensor:
    """Strings of equal length L -> LongTensor (N, L) of indices into ``ALPHABET``."""
    strings = list(strings)
    if not strings:
        return torch.empty(0, 0, dtype=torch.long)
    length = len(strings[0])
    rows = []
    for n, s in enumerate(strings):
        if len(s) != length:
            raise DataError(f"string {n} has {len(s)} characters, string 0 has {length}")
        try:
            rows.append([_INDEX[c] for c in s])
        except KeyError as e:
            raise DataError(f"string {n} holds {e.args[0]!r}, which is not in the 30-symbol "
                            f"alphabet {ALPHABET!r}") from None
    return torch.tensor(rows, dtype=torch.long)


def decode(x: torch.Tensor) -> list[str] | str:
    """Inverse of ``encode``: (N, L) -> list of N strings; (L,) -> one string."""
    if x.dim() == 1:
        return "".join(ALPHABET[i] for i in x.tolist())
    return ["".join(ALPHABET[i] for i in row) for row in x.tolist()]


def split(x: torch.Tensor, num_heldout: int = 24, *,
          generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Split strings (N, L) into (train, held-out) along dim 0.

    Without a generator the rule is fixed: the last ``num_heldout`` strings are held out (they come
    from the last fables, so no fable is in both parts). With a generator the held-out rows are a
    random subset, kept in their original order in both parts.
    """
    n = x.shape[0]
    if not 0 <= num_heldout <= n:
        raise ValueError(f"num_heldout must be in [0, {n}], got {num_heldout}")
    if generator is None:
        return x[:n - num_heldout], x[n - num_heldout:]
    perm = torch.randperm(n, generator=generator)
    held = torch.zeros(n, dtype=torch.bool)
    held[perm[:num_heldout]] = True
    return x[~held], x[held]


@dataclass(frozen=True)
class AesopStrings:
    """The paper's training strings. ``x``: LongTensor (num_strings, length) of ``ALPHABET``
    indices; ``strings``: the same as text; ``source``: where the text came from."""

    x: torch.Tensor
    strings: tuple[str, ...]
    source: str


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _strings_from(raw: bytes, num_strings: int, length: int, check_marker: bool) -> list[str]:
    """Decode and clean ``raw`` and cut the strings; DataError if the content does not fit."""
    try:
        text = clean_text(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise DataError(f"not UTF-8 text ({e})") from None
    fables = text.split("\n")
    first = next((i for i, f in enumerate(fables) if f.startswith(_MARKER)), None)
    if check_marker and first is None:
        raise DataError("not the Vernon Jones translation (its first fable's opening is missing)")
    if first:
        # Front matter (a Gutenberg edition's introduction or contents list) comes before the
        # first fable: drop it so that string 0 is a fable opening in every copy.
        text = "\n".join(fables[first:])
    return make_strings(text, num_strings, length)


def _cache_dir() -> Path:
    if os.environ.get("FFLAB_CACHE_DIR"):
        return Path(os.environ["FFLAB_CACHE_DIR"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "fflab"
    return Path.home() / ".cache" / "fflab"


def _fetch(url: str, timeout: float) -> bytes:
    """One HTTPS GET (tests replace this function so they never touch the network)."""
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (fixed https URLs)
        return response.read()


def _write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_aesop(path: str | os.PathLike | None = None, *, data_dir: str | os.PathLike | None = None,
               download: bool = True, cache_dir: str | os.PathLike | None = None,
               sha256: str | None = AESOP_SHA256, num_strings: int = NUM_STRINGS,
               length: int = LENGTH) -> AesopStrings:
    """Load the paper's Aesop strings: ``x`` (num_strings, length), default (248, 100).

    Sources, in order (the first that passes its checks wins):

    1. ``path`` if given. It is then the only source: a bad explicit file is an error, never
       silently replaced by another copy.
    2. ``<data_dir>/aesop/aesop.txt`` and ``<data_dir>/aesop.txt``, where ``data_dir`` defaults
       to ``$FFLAB_DATA_DIR``.
    3. ``<cache>/aesop/pg11339.txt`` (an earlier download); ``cache_dir`` defaults to
       ``$FFLAB_CACHE_DIR``, else ``$XDG_CACHE_HOME/fflab``, else ``~/.cache/fflab``.
    4. If ``download``: the Project Gutenberg text (``GUTENBERG_URLS``), saved to 3 atomically.

    Files from 1 and 2 must have sha256 ``sha256`` (``None`` skips the hash: use it for another
    copy or translation); 3 and 4 must be the Vernon Jones translation (module docstring). Every
    source must clean to ``num_strings`` strings.
    Raises DataError naming every source tried and why it failed.
    """
    tried: list[str] = []

    def attempt(label: str, raw: bytes, check_hash: bool) -> list[str] | None:
        # A local file is pinned by its hash; what we fetched ourselves by its content.
        if check_hash and sha256 is not None and _sha256(raw) != sha256:
            tried.append(f"{label}: sha256 {_sha256(raw)} != expected {sha256}")
            return None
        try:
            return _strings_from(raw, num_strings, length, check_marker=not check_hash)
        except DataError as e:
            tried.append(f"{label}: {e}")
            return None

    def from_file(p: Path, check_hash: bool) -> AesopStrings | None:
        if not p.is_file():
            tried.append(f"{p}: not found")
            return None
        strings = attempt(str(p), p.read_bytes(), check_hash)
        return None if strings is None else AesopStrings(encode(strings), tuple(strings), str(p))

    def fail() -> DataError:
        return DataError("Aesop's fables not found or invalid. Sources tried:\n  "
                         + "\n  ".join(tried)
                         + "\nPass path=..., set FFLAB_DATA_DIR to a folder holding aesop/aesop.txt, "
                         "or allow the download.")

    if path is not None:
        found = from_file(Path(path), check_hash=True)
        if found is None:
            raise fail()
        return found

    root = data_dir if data_dir is not None else os.environ.get("FFLAB_DATA_DIR")
    if root:
        for p in (Path(root) / "aesop" / "aesop.txt", Path(root) / "aesop.txt"):
            if (found := from_file(p, check_hash=True)) is not None:
                return found
    else:
        tried.append("data directory: none given (data_dir=None and FFLAB_DATA_DIR unset)")

    cached = Path(cache_dir) if cache_dir is not None else _cache_dir()
    cached = cached / "aesop" / _CACHE_NAME
    if (found := from_file(cached, check_hash=False)) is not None:
        return found

    if not download:
        tried.append("download: disabled (download=False)")
        raise fail()
    for url in GUTENBERG_URLS:
        try:
            raw = _fetch(url, _TIMEOUT_S)
        except Exception as e:  # any network failure: record it and try the next source
            tried.append(f"{url}: {type(e).__name__}: {e}")
            continue
        strings = attempt(url, raw, check_hash=False)
        if strings is not None:
            try:
                _write_atomic(cached, raw)
            except OSError as e:  # a read-only cache must not stop the run
                tried.append(f"{cached}: could not cache the download ({e})")
            return AesopStrings(encode(strings), tuple(strings), url)
    raise fail()
