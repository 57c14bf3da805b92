"""Aesop strings (section 7): alphabet, cleaning rules, string choice, sources and integrity.
The network is never touched: every test replaces the download function."""
import os
from pathlib import Path

import pytest
import torch

from fflab.data import aesop
from fflab.data.aesop import (
    AESOP_SHA256,
    ALPHABET,
    GUTENBERG_URLS,
    clean_text,
    decode,
    encode,
    load_aesop,
    make_strings,
    split,
)
from fflab.errors import DataError


def _find_real_file():
    if os.environ.get("FFLAB_TEST_AESOP"):
        return Path(os.environ["FFLAB_TEST_AESOP"])
    here = Path(__file__).resolve()
    for root in (here.parents[2], here.parents[2].parent):  # repo beside shared/, or a worktree
        p = root / "shared" / "data" / "aesop" / "aesop.txt"
        if p.is_file():
            return p
    return None


REAL = _find_real_file()
needs_real = pytest.mark.skipif(REAL is None or not REAL.is_file(),
                                reason="aesop.txt not found (set FFLAB_TEST_AESOP to its path)")


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    """No test reaches the network or the user's own data dir or cache."""
    def offline(url, timeout):
        raise OSError("network disabled in tests")
    monkeypatch.setattr(aesop, "_fetch", offline)
    monkeypatch.delenv("FFLAB_DATA_DIR", raising=False)
    monkeypatch.setenv("FFLAB_CACHE_DIR", str(tmp_path / "cache"))


def fable(title, body):
    return f"{title}\n{body}\n"


LONG = ("The Wolf ran far away from the Dog, and the Dog ran after him into the wood; it was a long chase, "
        "and the Dog won. ")


# --- alphabet and cleaning -------------------------------------------------------------------

def test_alphabet():
    assert len(ALPHABET) == 30 and len(set(ALPHABET)) == 30
    assert set(ALPHABET) == set("abcdefghijklmnopqrstuvwxyz") | set(" ,;.")


def test_bom_titles_and_lower_case():
    raw = "\ufeffTHE FOX AND THE GRAPES\nA hungry Fox.\nTHE CAT\nThe Cat sat.\n"
    assert clean_text(raw) == "a hungry fox.\nthe cat sat."


def test_sentence_punctuation_becomes_full_stop():
    assert clean_text("T T\nAha! Who? This: that.") == "aha. who. this. that."


def test_quotes_apostrophes_digits_dropped():
    assert clean_text("T T\n\"I don't,\" said 'he' in 1912 _we_ (yes).") == "i dont, said he in we yes."


def test_dashes_and_newlines_become_spaces():
    assert clean_text("T T\nCharcoal-burner--well\nand\tso \u2014 on") == "charcoal burner well and so on"


def test_collapse_spaces_and_punctuation_runs():
    assert clean_text("T T\n\"Help!\", he   cried . . . ; Then , no.") == "help. he cried. then, no."
    assert clean_text("T T\nWait...  what?!") == "wait. what."


def test_gutenberg_header_footer_and_brackets_removed():
    raw = ("The Project Gutenberg eBook of Aesop's Fables\nLicense text here.\n"
           "*** START OF THE PROJECT GUTENBERG EBOOK AESOP'S FABLES ***\n"
           "THE FOX\n[Illustration: THE FOX\nAND THE GRAPES]\nA Fox.\n"
           "*** END OF THE PROJECT GUTENBERG EBOOK AESOP'S FABLES ***\nMore license.\n")
    assert clean_text(raw) == "a fox."


def test_transliteration_and_crlf():
    assert clean_text("T T\r\nÆsop's café\r\nsaid so.") == "aesops cafe said so."


def test_front_matter_is_its_own_fable_and_empty_fables_dropped():
    assert clean_text("Front matter.\nTHE A\nTHE B\n123\nBody.") == "front matter.\nbody."


def test_single_capital_letter_line_is_not_a_title():
    assert clean_text("T T\nsaid\nI\nthink so.") == "said i think so."


# --- strings ----------------------------------------------------------------------------------

def test_make_strings_one_per_fable_skipping_short_ones():
    text = "a" * 5 + "\n" + "b" * 12 + "\n" + "c" * 10 + "\n" + "d" * 30
    assert make_strings(text, 3, 10) == ["b" * 10, "c" * 10, "d" * 10]
    assert make_strings(text, None, 10) == ["b" * 10, "c" * 10, "d" * 10]
    with pytest.raises(DataError, match="only 3 strings"):
        make_strings(text, 4, 10)


def test_make_strings_chunks():
    assert make_strings("abcd\nefgh", 2, 4, by="chunk") == ["abcd", " efg"]
    with pytest.raises(ValueError, match="unknown by"):
        make_strings("abcd", 1, 4, by="words")


def test_encode_decode():
    x = encode(["ab, ;.", "z y.x."])
    assert x.dtype == torch.long and x.shape == (2, 6)
    assert x[0].tolist() == [0, 1, 27, 26, 28, 29]
    assert decode(x) == ["ab, ;.", "z y.x."] and decode(x[1]) == "z y.x."
    with pytest.raises(DataError, match="'!'"):
        encode(["ab!"])
    with pytest.raises(DataError, match="characters"):
        encode(["ab", "abc"])


def test_split():
    x = torch.arange(10).unsqueeze(1)
    train, held = split(x, 3)
    assert train[:, 0].tolist() == list(range(7)) and held[:, 0].tolist() == [7, 8, 9]
    a = split(x, 3, generator=torch.Generator().manual_seed(0))
    b = split(x, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a[1], b[1]) and len(a[0]) == 7
    assert sorted(torch.cat(a)[:, 0].tolist()) == list(range(10))
    with pytest.raises(ValueError):
        split(x, 11)


# --- the real file ----------------------------------------------------------------------------

@needs_real
def test_real_file_gives_248_strings_of_100():
    data = load_aesop(REAL)
    assert data.x.shape == (248, 100) and data.x.dtype == torch.long
    assert len(data.strings) == 248 and all(len(s) == 100 for s in data.strings)
    assert all(set(s) <= set(ALPHABET) for s in data.strings)
    assert data.strings[0].startswith("a hungry fox saw some fine bunches of grapes")
    assert len(set(data.strings)) == 248
    assert decode(data.x) == list(data.strings)
    assert torch.equal(encode(decode(data.x)), data.x)
    assert data.source == str(REAL)


@needs_real
def test_data_dir_layouts(tmp_path, monkeypatch):
    data = load_aesop(data_dir=REAL.parents[1])  # <dir>/aesop/aesop.txt
    assert data.x.shape == (248, 100)
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "aesop.txt").write_bytes(REAL.read_bytes())  # <dir>/aesop.txt
    monkeypatch.setenv("FFLAB_DATA_DIR", str(flat))
    assert load_aesop(download=False).source == str(flat / "aesop.txt")


@needs_real
def test_wrong_checksum_is_a_data_error(tmp_path):
    bad = tmp_path / "aesop.txt"
    bad.write_bytes(REAL.read_bytes().replace(b"hungry Fox", b"hungry Cat", 1))
    with pytest.raises(DataError, match="sha256"):
        load_aesop(bad)
    assert load_aesop(bad, sha256=None).strings[0].startswith("a hungry cat")  # hash check off


def test_content_check_rejects_a_file_too_short(tmp_path):
    short = tmp_path / "aesop.txt"
    short.write_text(fable("THE FOX AND THE GRAPES", "A hungry Fox saw some fine bunches of Grapes. " * 3))
    with pytest.raises(DataError, match="only 1 strings"):
        load_aesop(short, sha256=None)


def test_no_source_lists_every_source_tried(tmp_path):
    with pytest.raises(DataError) as info:
        load_aesop(data_dir=tmp_path / "nowhere")
    message = str(info.value)
    assert str(tmp_path / "nowhere" / "aesop" / "aesop.txt") in message
    assert str(tmp_path / "nowhere" / "aesop.txt") in message
    assert str(tmp_path / "cache" / "aesop" / "pg11339.txt") in message
    for url in GUTENBERG_URLS:
        assert url in message
    assert "network disabled" in message


def test_download_disabled_is_listed(tmp_path):
    with pytest.raises(DataError, match="download=False") as info:
        load_aesop(download=False)
    assert "FFLAB_DATA_DIR unset" in str(info.value)


def _fake_gutenberg(body: bytes) -> bytes:
    return (b"The Project Gutenberg eBook of Aesop's Fables\r\n\r\n"
            b"*** START OF THE PROJECT GUTENBERG EBOOK AESOP'S FABLES ***\r\n"
            + body.replace(b"\n", b"\r\n")
            + b"\r\n*** END OF THE PROJECT GUTENBERG EBOOK AESOP'S FABLES ***\r\nLicence.\r\n")


def _synthetic_fables(n: int) -> bytes:
    fables = [fable("THE FOX AND THE GRAPES", "A hungry Fox saw some fine bunches of Grapes. " + LONG)]
    fables += [fable(f"THE WOLF NUMBER {i}", LONG) for i in range(1, n)]
    return "".join(fables).encode()


def test_download_is_checked_cached_atomically_and_reused(tmp_path, monkeypatch):
    calls = []

    def fake_fetch(url, timeout):
        calls.append(url)
        if url == GUTENBERG_URLS[0]:
            raise OSError("first mirror down")
        front = b"INTRODUCTION\nThese fables are old. " + LONG.encode() + b"\nCONTENTS\nThe Fox and the Grapes 1\n"
        return _fake_gutenberg(front + _synthetic_fables(250))
    monkeypatch.setattr(aesop, "_fetch", fake_fetch)
    data = load_aesop()
    assert calls == list(GUTENBERG_URLS[:2]) and data.source == GUTENBERG_URLS[1]
    assert data.x.shape == (248, 100)
    assert data.strings[0].startswith("a hungry fox")  # front matter dropped
    cached = tmp_path / "cache" / "aesop" / "pg11339.txt"
    assert cached.is_file() and os.listdir(cached.parent) == ["pg11339.txt"]  # no temp file left
    again = load_aesop(download=False)
    assert again.source == str(cached) and torch.equal(again.x, data.x)


def test_download_of_another_translation_is_rejected_and_not_cached(tmp_path, monkeypatch):
    other = _synthetic_fables(250).replace(b"A hungry Fox saw some fine bunches", b"A famished Fox saw some")
    monkeypatch.setattr(aesop, "_fetch", lambda url, timeout: _fake_gutenberg(other))
    with pytest.raises(DataError, match="not the Vernon Jones translation"):
        load_aesop()
    assert not (tmp_path / "cache" / "aesop" / "pg11339.txt").exists()


def test_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.delenv("FFLAB_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert aesop._cache_dir() == tmp_path / "xdg" / "fflab"


def test_sha256_constant_matches_the_data_readme():
    assert AESOP_SHA256.startswith("4f1e7463")
