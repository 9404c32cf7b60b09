"""Large corpora: the vectorised encoder, the token cache, folders, and bounded memory."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers_robust import assert_one_line_error, invoke

from chargpt_tui import data
from chargpt_tui.data import (
    FOLDER_SEPARATOR,
    encode_corpus,
    encode_text,
    get_batch,
    load_dataset,
    read_token_cache,
    split_tokens,
    token_cache_base,
)
from chargpt_tui.errors import DataError
from chargpt_tui.tokenizer import CharTokenizer, UnknownCharacterError


def random_unicode(length: int, seed: int = 0) -> str:
    """ASCII, Latin, CJK, emoji and other characters outside the BMP, no surrogates."""
    rng = random.Random(seed)
    ranges = [(0x20, 0x7E), (0xA0, 0x24F), (0x4E00, 0x4FFF), (0x1F300, 0x1F64F),
              (0x10000, 0x100FF), (0x10FF00, 0x10FFFD)]
    picks = [rng.choice(ranges) for _ in range(length)]
    return "".join(chr(rng.randint(low, high)) for low, high in picks) + "\n"


def old_encoding(text: str) -> tuple[str, list[int]]:
    """The reference: the didactic tokenizer, one character at a time."""
    tokenizer = CharTokenizer.from_text(text)
    return tokenizer.vocab, tokenizer.encode(text)


def test_vectorised_encoding_equals_the_tokenizer_on_random_unicode() -> None:
    text = random_unicode(5000)
    vocab, ids = old_encoding(text)
    assert max(map(ord, vocab)) > 0xFFFF  # the test covers characters outside the BMP
    encoded = encode_text(text, vocab)
    assert encoded.dtype == torch.uint16
    assert encoded.tolist() == ids
    assert encode_corpus(data.TextSource("memory", text=text)).tokens.tolist() == ids


def test_file_encoding_equals_the_tokenizer_across_chunk_edges(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """7-byte chunks cut most multi-byte characters in two: the decoder must stitch them."""
    monkeypatch.setattr(data, "CHUNK_BYTES", 7)
    text = random_unicode(3000, seed=1)
    corpus = tmp_path / "unicode.txt"
    corpus.write_text(text, encoding="utf-8")
    encoded = encode_corpus(load_dataset(str(corpus)))
    assert (encoded.vocab, encoded.tokens.tolist()) == old_encoding(text)


def test_small_vocabularies_are_stored_in_one_byte_per_character(tmp_path: Path) -> None:
    corpus = tmp_path / "small.txt"
    corpus.write_text("hello world\n" * 100)
    encoded = encode_corpus(load_dataset(str(corpus)))
    assert encoded.tokens.dtype == torch.uint8
    assert token_cache_base(load_dataset(str(corpus)), "utf-8").with_suffix(
        ".ids").stat().st_size == 1200


def test_a_vocabulary_over_65535_characters_is_stored_as_int32(tmp_path: Path) -> None:
    chars = [chr(c) for c in range(0x20, 0x20 + 70_000) if not 0xD800 <= c <= 0xDFFF]
    text = "".join(random.Random(2).sample(chars, len(chars))) + "".join(chars[:500])
    corpus = tmp_path / "wide.txt"
    corpus.write_text(text, encoding="utf-8")
    encoded = encode_corpus(load_dataset(str(corpus)))
    vocab, ids = old_encoding(text)
    assert len(vocab) > 65_535 and encoded.tokens.dtype == torch.int32
    assert encoded.vocab == vocab and encoded.tokens.tolist() == ids
    assert encode_text(text, vocab).dtype == torch.int32


def test_second_load_maps_the_cache_and_batches_match_the_old_ones(tmp_path: Path) -> None:
    text = random_unicode(4000, seed=3)
    corpus = tmp_path / "c.txt"
    corpus.write_text(text, encoding="utf-8")
    first = encode_corpus(load_dataset(str(corpus)))
    base = token_cache_base(load_dataset(str(corpus)), "utf-8")
    stamp = base.with_suffix(".ids").stat().st_mtime_ns
    second = encode_corpus(load_dataset(str(corpus)))
    assert base.with_suffix(".ids").stat().st_mtime_ns == stamp  # read, not rewritten
    assert torch.equal(first.tokens, second.tokens)
    # The same windows as the old in-memory int64 tensor, in int64.
    old = torch.tensor(old_encoding(text)[1], dtype=torch.long)
    new_split, old_split = split_tokens(second.tokens, 16), split_tokens(old, 16)
    assert len(new_split.train) == len(old_split.train) == int(0.9 * len(old))
    x_new, y_new = get_batch(new_split.val, 16, 4, torch.Generator().manual_seed(0))
    x_old, y_old = get_batch(old_split.val, 16, 4, torch.Generator().manual_seed(0))
    assert x_new.dtype == torch.long
    assert torch.equal(x_new, x_old) and torch.equal(y_new, y_old)


@pytest.mark.parametrize("damage", ["truncate", "flip", "header", "no-header"])
def test_a_damaged_cache_entry_is_a_miss_and_is_rebuilt(tmp_path: Path, damage: str) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("abcdefgh\n" * 200)
    source = load_dataset(str(corpus))
    expected = encode_corpus(source).tokens.tolist()
    base = token_cache_base(source, "utf-8")
    ids, header = base.with_suffix(".ids"), base.with_suffix(".json")
    if damage == "truncate":
        ids.write_bytes(ids.read_bytes()[:-10])
    elif damage == "flip":
        ids.write_bytes(b"\xff" * 8 + ids.read_bytes()[8:])
    elif damage == "header":
        header.write_text("{not json")
    else:
        header.unlink()
    assert read_token_cache(base) is None
    assert encode_corpus(source).tokens.tolist() == expected
    assert read_token_cache(base) is not None  # written again


def test_a_changed_file_invalidates_its_entry_and_the_old_one_goes(tmp_path: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("abc\n" * 100)
    old_base = token_cache_base(load_dataset(str(corpus)), "utf-8")
    assert encode_corpus(load_dataset(str(corpus))).vocab == "\nabc"
    corpus.write_text("abd\n" * 100)  # same size: the content hash tells them apart
    source = load_dataset(str(corpus))
    assert token_cache_base(source, "utf-8") != old_base
    encoded = encode_corpus(source)
    assert encoded.vocab == "\nabd"
    assert encoded.tokens.tolist() == CharTokenizer("\nabd").encode("abd\n" * 100)
    assert not old_base.with_suffix(".ids").exists()


def test_a_checkpoint_vocabulary_renumbers_the_ids(tmp_path: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("bad cab\n" * 50)
    wider = "\n abcdxyz"
    encoded = encode_corpus(load_dataset(str(corpus)), vocab=wider)
    assert encoded.vocab == wider
    assert encoded.tokens.tolist() == CharTokenizer(wider).encode("bad cab\n" * 50)
    with pytest.raises(UnknownCharacterError):
        encode_corpus(load_dataset(str(corpus)), vocab="\nabcd")  # no space


def test_a_folder_joins_its_text_files_in_path_order(tmp_path: Path) -> None:
    folder = tmp_path / "texts"
    (folder / "b").mkdir(parents=True)
    (folder / ".git").mkdir()
    (folder / "b" / "two.txt").write_text("second\n")
    (folder / "a.md").write_text("first\n")
    (folder / "c.py").write_text("third\n")
    (folder / ".hidden").write_text("never\n")
    (folder / ".git" / "HEAD").write_text("never\n")
    (folder / "image.png").write_bytes(b"\x89PNG\x00\x00binary")
    (folder / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    notices: list[str] = []
    encoded = encode_corpus(load_dataset(str(folder)), notice=notices.append)
    text = FOLDER_SEPARATOR.join(["first\n", "second\n", "third\n"])
    assert (encoded.vocab, encoded.tokens.tolist()) == old_encoding(text)
    assert len(notices) == 1 and "left out 2 files" in notices[0]
    assert "image.png" in notices[0] and "latin.txt" in notices[0]


def test_empty_folders_and_folders_without_text_are_one_line_exit_2(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    binaries = tmp_path / "binaries"
    binaries.mkdir()
    (binaries / "x.bin").write_bytes(b"\x00\x01\x02")
    for folder, needle in ((empty, "has no files"), (binaries, "has no utf-8 text files")):
        out = tmp_path / f"run-{folder.name}"
        result = invoke("train", "--data", str(folder), "--max-iters", "1", "--out", str(out))
        assert_one_line_error(result, needle, str(folder))
        assert result.exit_code == 2 and not out.exists()
    with pytest.raises(DataError, match="has no files"):
        load_dataset(str(empty))


PEAK_RSS_SCRIPT = textwrap.dedent("""
    import resource, subprocess, sys
    child = "from chargpt_tui import data; data.CHUNK_BYTES = 2**18; " \\
            f"data.encode_corpus(data.load_dataset({sys.argv[1]!r}))"
    subprocess.run([sys.executable, "-c", child], check=True)
    print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
""")


def peak_rss_of_encoding(corpus: Path) -> int:
    """Peak RSS in bytes of a fresh process that encodes ``corpus`` (measured by its parent)."""
    reply = subprocess.run([sys.executable, "-c", PEAK_RSS_SCRIPT, str(corpus)], check=True,
                           capture_output=True, text=True)
    return int(reply.stdout.split()[-1])


def write_generated(path: Path, megabytes: int) -> None:
    line = ("def f(x):  # ünïcödé ✓ 漢字 😀\n    return x * 2 + len('abc')\n").encode()
    with path.open("wb") as handle:
        for _ in range(megabytes * 2**20 // (len(line) * 1000)):
            handle.write(line * 1000)


@pytest.mark.slow
def test_memory_is_bounded_by_a_chunk_not_by_the_corpus(tmp_path: Path) -> None:
    """Encoding 5x more text must not cost more memory: the growth stays far below the growth
    of the file (the old encoder held the text, its bytes and a Python int per character).
    Chunks of 256 KiB, so that the allocator settles within the smaller file."""
    small, large = tmp_path / "small.txt", tmp_path / "large.txt"
    write_generated(small, 8)
    write_generated(large, 40)
    growth = peak_rss_of_encoding(large) - peak_rss_of_encoding(small)
    assert growth < 0.25 * (large.stat().st_size - small.stat().st_size), growth
