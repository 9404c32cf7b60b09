"""Training text: where it comes from, how it is cached, and how batches are cut from it.

``--data`` takes a builtin name (``shakespeare``, ``python-stdlib``), a local path, or an http(s)
URL. Downloads are streamed with ``requests`` (timeouts, a size cap), written to the user cache
atomically and never fetched twice. If the default corpus cannot be downloaded on a first run, an
offline corpus built from the running Python's standard library keeps the app usable.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import json
import os
import sys
import sysconfig
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from chargpt_tui.errors import DataError

if TYPE_CHECKING:
    import torch

    from chargpt_tui.tokenizer import CharTokenizer

SHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024  # $CHARGPT_TUI_MAX_DOWNLOAD_BYTES overrides
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 30.0  # $CHARGPT_TUI_HTTP_TIMEOUT overrides both timeouts (slow links, tests)
STDLIB_CORPUS_BYTES = 1_500_000
BINARY_SNIFF_BYTES = 1_000_000  # a NUL byte this early means a binary, not text
FOLDER_SEPARATOR = "\n\n"  # between the files of a --data folder
CHUNK_BYTES = 4 * 2**20  # a file is decoded and encoded this many bytes at a time
CHUNK_CHARS = 4 * 2**20  # likewise for a text already in memory
CODE_POINTS = 0x110000  # every Unicode code point: the size of the code point → id table
TOKEN_CACHE_FORMAT = 1
FULL_HASH_BYTES = 32 * 2**20  # files up to this size are hashed whole for the cache key
EDGE_BYTES = 2**20  # larger ones by their first and last MiB (plus size and mtime)

# (bytes so far, total bytes or None) — the CLI draws a rich progress bar from it.
ProgressCallback = Callable[[int, "int | None"], None]
NoticeCallback = Callable[[str], None]


@dataclass(frozen=True)
class TextSource:
    """Where a training text is, before it is read: files on disk (joined in order, with
    ``FOLDER_SEPARATOR`` between them) or a text already in memory. ``name`` is what the UI shows
    and checkpoints store."""

    name: str
    files: tuple[Path, ...] = ()
    text: str | None = None
    folder: Path | None = None  # set when ``files`` are the text files found under a folder


def cache_dir() -> Path:
    """Where downloads are kept: ``$CHARGPT_TUI_CACHE``, else the XDG cache dir."""
    override = os.environ.get("CHARGPT_TUI_CACHE")
    if override:
        return Path(override).expanduser()
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    elif sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "chargpt-tui"


def shakespeare_url() -> str:
    """The default corpus URL; ``$CHARGPT_TUI_SHAKESPEARE_URL`` points it at a mirror."""
    return os.environ.get("CHARGPT_TUI_SHAKESPEARE_URL", SHAKESPEARE_URL)


def _positive_env_number(name: str, default: float) -> float:
    """A positive number from the environment, or ``default`` when the variable is unset."""
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise DataError(f"${name} must be a positive number, not {raw!r}", f"unset {name}")
    return value


def http_timeouts() -> tuple[float, float]:
    """(connect, read) timeouts in seconds; the read timeout is per chunk, not the whole body."""
    override = os.environ.get("CHARGPT_TUI_HTTP_TIMEOUT")
    if override:
        seconds = _positive_env_number("CHARGPT_TUI_HTTP_TIMEOUT", READ_TIMEOUT_S)
        return seconds, seconds
    return CONNECT_TIMEOUT_S, READ_TIMEOUT_S


def max_download_bytes() -> int:
    """The size cap for downloads: a wrong URL must not fill the memory or the disk."""
    return int(_positive_env_number("CHARGPT_TUI_MAX_DOWNLOAD_BYTES", MAX_DOWNLOAD_BYTES))


def load_dataset(
    spec: str = "shakespeare",
    *,
    encoding: str = "utf-8",
    progress: ProgressCallback | None = None,
    notice: NoticeCallback | None = None,
) -> TextSource:
    """Resolve ``--data`` to a :class:`TextSource` (downloading a URL once; reading nothing else
    yet: :func:`encode_corpus` reads it). Raises :class:`DataError` with a one-line message."""
    if spec == "shakespeare":
        try:
            return TextSource(spec, (fetch_url(shakespeare_url(), "tinyshakespeare.txt",
                                               progress),))
        except DataError as error:
            # Only the *default* corpus falls back: an explicit path or URL that fails is an error.
            if notice:
                notice(
                    f"could not download Tiny Shakespeare ({error.message}); training on the "
                    "Python standard library's sources instead — pass --data PATH or URL to choose"
                )
            return TextSource("python-stdlib", text=python_stdlib_corpus())
    if spec == "python-stdlib":
        return TextSource(spec, text=python_stdlib_corpus())
    if spec.startswith(("http://", "https://")):
        return TextSource(spec, (fetch_url(spec, url_cache_name(spec), progress, encoding),))
    if "://" in spec:
        raise DataError(f"unsupported URL scheme in {spec!r}", "use an http(s) URL or a local path")
    path = Path(spec).expanduser()
    if _is_dir(path):
        return TextSource(spec, text_files_under(path), folder=path)
    return TextSource(spec, (check_text_file(path),))


def load_local_dataset(spec: str) -> TextSource | None:
    """Where ``spec``'s text is, if this machine has it (a file or folder, the download cache,
    the stdlib corpus), never downloading; None if it has not. For looking at a trained run's
    text later, e.g. a checkpoint opened for chat only; training uses :func:`load_dataset`."""
    if spec == "python-stdlib":
        return TextSource(spec, text=python_stdlib_corpus())
    if spec == "shakespeare":
        path = cache_dir() / "tinyshakespeare.txt"
    elif spec.startswith(("http://", "https://")):
        path = cache_dir() / url_cache_name(spec)
    elif "://" in spec:
        return None
    else:
        path = Path(spec).expanduser()
    try:
        if _is_dir(path):
            return TextSource(spec, text_files_under(path), folder=path)
        return TextSource(spec, (check_text_file(path),))
    except DataError:
        return None


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False  # check_text_file reports what is wrong with the path


def check_text_file(path: Path) -> Path:
    """``path`` if it is a readable regular file; else a one-line :class:`DataError`."""
    try:
        if not path.exists():
            raise DataError(f"data file not found: {path}", "check the path given to --data")
        if not path.is_file():
            # A FIFO or device would block or never end: reading it is never what was meant.
            raise DataError(f"--data is not a regular file: {path}",
                            "point it at a text file (not a pipe, socket or device)")
        with path.open("rb") as handle:
            handle.read(1)
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror or error}",
                        "check that it exists and that you may read it") from None
    return path


def text_files_under(folder: Path) -> tuple[Path, ...]:
    """Every regular file under ``folder``, hidden ones (``.git``…) left out, sorted by relative
    path so the same folder always gives the same text. Binaries are dropped later, when read."""
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            path = Path(root) / name
            if not name.startswith(".") and path.is_file():
                found.append(path)
    if not found:
        raise DataError(f"--data folder {folder} has no files",
                        "point it at a folder of text files, or at one file")
    return tuple(sorted(found, key=lambda p: p.relative_to(folder).as_posix()))


def check_text_bytes(raw: bytes, source: str, encoding: str = "utf-8") -> None:
    """Refuse a download that is not text rather than cache a vocabulary of garbage."""
    if not raw:
        raise DataError(f"{source} is empty", "train on a file with some text in it")
    if b"\x00" in raw[:BINARY_SNIFF_BYTES]:
        raise binary_file(source)
    try:
        raw.decode(encoding)
    except UnicodeDecodeError as error:
        raise undecodable(source, encoding, error.start) from None
    except LookupError:
        raise unknown_encoding(encoding) from None


def binary_file(source: str | Path) -> DataError:
    return DataError(f"{source} looks like a binary file (it has NUL bytes)", "use a text file")


def undecodable(source: str | Path, encoding: str, offset: int) -> DataError:
    return DataError(
        f"{source} is not valid {encoding} text (bad byte at offset {offset})",
        "pass --encoding (e.g. --encoding latin-1) or convert the file to UTF-8",
    )


def unknown_encoding(encoding: str) -> DataError:
    return DataError(f"unknown text encoding {encoding!r}", "try --encoding utf-8")


def url_cache_name(url: str) -> str:
    """A stable cache file name for a URL: a short hash plus the URL's last path part."""
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    tail = url.rstrip("/").rsplit("/", 1)[-1].split("?")[0][:40] or "data"
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in tail)
    return f"{digest}-{safe}"


def fetch_url(url: str, cache_name: str, progress: ProgressCallback | None = None,
              encoding: str = "utf-8") -> Path:
    """The cached copy of ``url``: downloaded once (checked to be text), written atomically."""
    cached = cache_dir() / cache_name
    try:
        if cached.is_file():
            return cached
    except OSError:
        pass  # an unreadable cache entry is a cache miss: download again and replace it
    raw = download(url, progress)
    check_text_bytes(raw, url, encoding)
    try:
        atomic_write_bytes(cached, raw)
    except OSError as error:
        raise DataError(f"cannot write the download cache {cached}: {error.strerror or error}",
                        "set $CHARGPT_TUI_CACHE to a writable folder") from None
    return cached


def download(url: str, progress: ProgressCallback | None = None) -> bytes:
    """Stream ``url`` into memory with timeouts and a size cap; one-line errors for each failure."""
    import requests  # imported here: only downloads need it, and it is slow-ish to import

    if not url.startswith(("http://", "https://")):
        raise DataError(f"unsupported URL scheme in {url!r}", "use an http(s) URL or a local path")
    cap = max_download_bytes()
    cap_hint = "download it yourself and pass the file, or raise $CHARGPT_TUI_MAX_DOWNLOAD_BYTES"
    try:
        with requests.get(url, stream=True, timeout=http_timeouts()) as reply:
            if reply.status_code != 200:
                raise DataError(f"{url} answered HTTP {reply.status_code} {reply.reason}",
                                "check the URL, or use a local file")
            content_type = reply.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if content_type and not (
                content_type.startswith("text/") or content_type == "application/octet-stream"
            ):
                raise DataError(f"{url} is not text (Content-Type {content_type})",
                                "point --data at a plain-text file")
            total = int(reply.headers.get("Content-Length") or 0) or None
            if total and total > cap:
                raise DataError(f"{url} is {total} bytes, over the {cap} byte cap", cap_hint)
            chunks: list[bytes] = []
            received = 0
            for chunk in reply.iter_content(chunk_size=64 * 1024):
                received += len(chunk)
                if received > cap:
                    raise DataError(f"{url} is over the {cap} byte cap", cap_hint)
                chunks.append(chunk)
                if progress:
                    progress(received, total)
            return b"".join(chunks)
    except requests.exceptions.Timeout:
        raise DataError(
            f"timed out downloading {url}", "check the network or use a local file"
        ) from None
    except requests.exceptions.ConnectionError as error:
        # A read timeout in the middle of a streamed body arrives as a ConnectionError.
        detail = str(error).lower()
        reason = ("DNS lookup failed" if "resolve" in detail
                  else "timed out downloading" if "timed out" in detail
                  else "connection failed")
        raise DataError(f"{reason} for {url}", "check the network or use a local file") from None
    except requests.exceptions.RequestException as error:
        raise DataError(f"download of {url} failed: {type(error).__name__}") from None


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write ``payload`` so that readers never see half of it (see :func:`atomic_output`)."""
    with atomic_output(path) as handle:
        handle.write(payload)


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[BinaryIO]:
    """A file to write ``path`` through: a temp file in the same folder, fsynced and renamed
    over ``path`` when the block ends; removed instead if it raises."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def python_stdlib_corpus(limit: int = STDLIB_CORPUS_BYTES) -> str:
    """An offline corpus: the running Python's own stdlib sources, a fixed selection.

    Files are taken in sorted order, ASCII-only ones (a small vocabulary), until ``limit``
    characters — deterministic for a given Python, and always on disk.
    """
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    parts: list[str] = []
    size = 0
    for path in sorted(stdlib.glob("*.py")):
        try:
            source = path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError):
            continue
        parts.append(f"# ---- {path.name} ----\n{source}\n")
        size += len(parts[-1])
        if size >= limit:
            break
    if not parts:
        raise DataError("no Python standard library sources found", "pass --data PATH")
    return "".join(parts)[:limit]


# -- encoding: text → token ids, once per file, cached on disk ---------------------------------
#
# A character's id is its rank among the corpus's distinct characters (CharTokenizer.from_text).
# Encoding a 1 GB text one character at a time in Python takes minutes and tens of GB (a list of
# Python ints), so it runs on tensors, a chunk at a time: ``str.encode("utf-32-le")`` turns a
# chunk into its code points (one int32 each), and ``lookup[code_points]`` turns those into ids.
# Two passes over the text: the first finds which characters occur (the vocabulary), the second
# writes the ids. Memory is bounded by a chunk, not by the corpus.


def token_dtype(vocab_size: int) -> torch.dtype:
    """The smallest dtype that holds every id: 1 byte a character for up to 256 distinct ones."""
    import torch

    if vocab_size <= 256:
        return torch.uint8
    return torch.uint16 if vocab_size <= 65_535 else torch.int32


def code_points(text: str) -> torch.Tensor:
    """The characters of ``text`` as int32 code points, without a Python loop."""
    import torch

    if not text:  # frombuffer refuses an empty buffer
        return torch.zeros(0, dtype=torch.int32)
    # surrogatepass: a lone surrogate (possible in a str, never in decoded UTF-8) stays a char.
    return torch.frombuffer(bytearray(text.encode("utf-32-le", "surrogatepass")),
                            dtype=torch.int32)


def vocab_lookup(vocab: str) -> torch.Tensor:
    """code point → id for the characters of ``vocab``, -1 for every other code point."""
    import torch

    lookup = torch.full((CODE_POINTS,), -1, dtype=torch.int32)
    lookup[code_points(vocab).long()] = torch.arange(len(vocab), dtype=torch.int32)
    return lookup


def encode_text(text: str, vocab: str) -> torch.Tensor:
    """``text`` as ids of ``vocab`` (same ids as :meth:`CharTokenizer.encode`), smallest dtype."""
    import torch

    from chargpt_tui.tokenizer import UnknownCharacterError

    lookup, dtype = vocab_lookup(vocab), token_dtype(len(vocab))
    chunks = [lookup.index_select(0, code_points(text[i : i + CHUNK_CHARS]))
              for i in range(0, len(text), CHUNK_CHARS)]
    ids = torch.cat(chunks) if chunks else torch.zeros(0, dtype=torch.int32)
    if (ids < 0).any():
        raise UnknownCharacterError("".join(sorted(set(text) - set(vocab))))
    return ids.to(dtype)


@dataclass
class EncodedText:
    """A whole corpus as ids: its vocabulary and a 1-D tensor of ids (memory-mapped from the
    token cache for files, so a 1 GB corpus costs no RAM until batches touch it)."""

    vocab: str
    tokens: torch.Tensor
    left_out: tuple[str, ...] = ()  # files of a folder that are not text, by relative path


def encode_corpus(source: TextSource, encoding: str = "utf-8", vocab: str | None = None,
                  progress: ProgressCallback | None = None,
                  notice: NoticeCallback | None = None) -> EncodedText:
    """Ids of the whole corpus, in its own vocabulary or in ``vocab`` (a checkpoint's, to resume).

    Files are encoded once and cached (see :func:`token_cache_base`); later runs map the cache.
    Raises :class:`~chargpt_tui.tokenizer.UnknownCharacterError` if ``vocab`` lacks a character.
    """
    if source.text is not None:
        own_vocab = "".join(sorted(set(source.text)))
        return EncodedText(vocab or own_vocab, encode_text(source.text, vocab or own_vocab))
    base = token_cache_base(source, encoding)
    own = read_token_cache(base) or build_token_cache(base, source, encoding, progress)
    if own.left_out and notice and source.folder is not None:
        shown = ", ".join(own.left_out[:3]) + (", …" if len(own.left_out) > 3 else "")
        notice(f"left out {len(own.left_out)} files of {source.folder} that are not {encoding} "
               f"text: {shown}")
    if vocab is None or vocab == own.vocab:
        return own
    from chargpt_tui.tokenizer import UnknownCharacterError

    unknown = set(own.vocab) - set(vocab)
    if unknown:
        raise UnknownCharacterError("".join(sorted(unknown)))
    # Another vocabulary (a superset: resuming on part of the data): renumber the cached ids.
    variant = base.with_name(f"{base.name}-{hashlib.sha256(vocab.encode()).hexdigest()[:12]}")
    return read_token_cache(variant) or write_token_cache(
        variant, vocab, _renumbered(own, vocab), own.left_out)


def _renumbered(encoded: EncodedText, vocab: str) -> Iterator[torch.Tensor]:
    """``encoded``'s ids as ids of ``vocab`` (which holds all its characters), a chunk at a time."""
    new_ids = vocab_lookup(vocab).index_select(0, code_points(encoded.vocab))
    for start in range(0, len(encoded.tokens), CHUNK_CHARS):
        yield new_ids.index_select(0, encoded.tokens[start : start + CHUNK_CHARS].int())


def file_chunks(path: Path, encoding: str) -> Iterator[tuple[str, int]]:
    """A file's text as (chunk, bytes read for it): decoded incrementally, so a character that a
    chunk boundary cuts in half is held back and finished by the next chunk."""
    try:
        decoder = codecs.getincrementaldecoder(encoding)()
    except LookupError:
        raise unknown_encoding(encoding) from None
    offset = 0
    try:
        with path.open("rb") as handle:
            while raw := handle.read(CHUNK_BYTES):
                if offset == 0 and b"\x00" in raw[:BINARY_SNIFF_BYTES]:
                    raise binary_file(path)
                held = len(decoder.getstate()[0])  # bytes of a cut character from the last chunk
                try:
                    text = decoder.decode(raw)
                except UnicodeDecodeError as error:
                    raise undecodable(path, encoding, offset - held + error.start) from None
                offset += len(raw)
                yield text, len(raw)
            held = len(decoder.getstate()[0])
            try:
                yield decoder.decode(b"", final=True), 0
            except UnicodeDecodeError as error:
                raise undecodable(path, encoding, offset - held + error.start) from None
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror or error}",
                        "check that it exists and that you may read it") from None


class _Ticker:
    """Progress over both passes, in bytes read (each file is read twice)."""

    def __init__(self, progress: ProgressCallback | None, files: tuple[Path, ...]) -> None:
        self.progress = progress
        self.total = 2 * sum(_size(path) for path in files)
        self.done = 0

    def __call__(self, nbytes: int) -> None:
        self.done += nbytes
        if self.progress and nbytes:
            self.progress(self.done, self.total)


def build_token_cache(base: Path, source: TextSource, encoding: str,
                      progress: ProgressCallback | None = None) -> EncodedText:
    """Encode ``source``'s files into the cache entry ``base`` (two passes) and map it."""
    import torch

    ticker = _Ticker(progress, source.files)
    # Pass 1: which characters occur. A folder leaves out files that are not text.
    seen = torch.zeros(CODE_POINTS, dtype=torch.bool)
    kept: list[Path] = []
    left_out: list[str] = []
    for path in source.files:
        in_file = torch.zeros(CODE_POINTS, dtype=torch.bool)  # kept only if all of it decodes
        try:
            chars = 0
            for text, nbytes in file_chunks(path, encoding):
                in_file[code_points(text).long()] = True  # int64: int32 here leaks
                chars += len(text)
                ticker(nbytes)
        except DataError:
            if source.folder is None:
                raise
            left_out.append(path.relative_to(source.folder).as_posix())
            continue
        if chars:
            kept.append(path)
            seen |= in_file
        elif source.folder is None:
            raise DataError(f"{path} is empty", "train on a file with some text in it")
    if not kept:
        raise DataError(f"--data folder {source.folder} has no {encoding} text files",
                        "point it at a folder of text files, or pass --encoding")
    if len(kept) > 1:
        seen[code_points(FOLDER_SEPARATOR).long()] = True
    vocab = "".join(chr(c) for c in seen.nonzero().flatten().tolist())
    lookup = vocab_lookup(vocab)

    def ids() -> Iterator[torch.Tensor]:  # pass 2: the text again, as ids
        for index, path in enumerate(kept):
            if index:
                yield lookup.index_select(0, code_points(FOLDER_SEPARATOR))
            for text, nbytes in file_chunks(path, encoding):
                yield lookup.index_select(0, code_points(text))  # lookup[code points]
                ticker(nbytes)

    return write_token_cache(base, vocab, ids(), tuple(left_out))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


# -- the token cache: <cache>/tokens/<slot>-<key>.ids (raw ids) + .json (what they are) --------
# The key is the content (sizes, mtimes, hashes of the files), so an edited file is a miss; the
# slot is the path, so an edited file's old entry is removed when its new one is written.


def token_cache_base(source: TextSource, encoding: str) -> Path:
    """The cache entry (without suffix) for ``source`` read with ``encoding``."""
    where = source.folder or source.files[0]
    slot = hashlib.sha256(str(where.resolve()).encode()).hexdigest()[:12]
    content = [TOKEN_CACHE_FORMAT, encoding, FOLDER_SEPARATOR,
               [file_fingerprint(path) for path in source.files]]
    key = hashlib.sha256(json.dumps(content).encode()).hexdigest()[:24]
    return cache_dir() / "tokens" / f"{slot}-{key}"


def file_fingerprint(path: Path) -> list[int | str]:
    """Size, modification time and a content hash: the whole file when that is cheap, else its
    first and last MiB (a changed size or mtime catches the rest)."""
    try:
        stat = path.stat()
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            if stat.st_size <= FULL_HASH_BYTES:
                digest.update(handle.read())
            else:
                digest.update(handle.read(EDGE_BYTES))
                handle.seek(-EDGE_BYTES, os.SEEK_END)
                digest.update(handle.read(EDGE_BYTES))
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror or error}",
                        "check that it exists and that you may read it") from None
    return [stat.st_size, stat.st_mtime_ns, digest.hexdigest()]


def _edges_digest(path: Path) -> str:
    """A hash of the first and last 64 KiB of an ids file: a cheap check that it is ours."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        digest.update(handle.read(65536))
        handle.seek(max(0, path.stat().st_size - 65536))
        digest.update(handle.read(65536))
    return digest.hexdigest()


def read_token_cache(base: Path) -> EncodedText | None:
    """The entry at ``base``, memory-mapped; None when missing, truncated or damaged (a miss)."""
    import torch

    ids_file = base.with_suffix(".ids")
    try:
        header = json.loads(base.with_suffix(".json").read_text(encoding="utf-8"))
        vocab, count = header["vocab"], header["tokens"]
        if (header["format"] != TOKEN_CACHE_FORMAT or not isinstance(vocab, str) or not vocab
                or not isinstance(count, int) or count < 1):
            return None
        dtype = token_dtype(len(vocab))
        if (header["dtype"] != str(dtype).removeprefix("torch.")
                or ids_file.stat().st_size != count * dtype.itemsize
                or _edges_digest(ids_file) != header["edges"]):
            return None
        # shared=False: a private, read-only-in-practice mapping; pages load as batches touch them.
        tokens = torch.from_file(str(ids_file), shared=False, size=count, dtype=dtype)
        return EncodedText(vocab, tokens, tuple(header.get("left_out", ())))
    except (OSError, ValueError, KeyError, TypeError, RuntimeError):
        return None


def write_token_cache(base: Path, vocab: str, ids: Iterable[torch.Tensor],
                      left_out: tuple[str, ...] = ()) -> EncodedText:
    """Write ids (chunk by chunk, in ``vocab``'s dtype) and their header atomically, drop the
    slot's older entries, and return the entry mapped from disk."""
    import torch

    dtype = token_dtype(len(vocab))
    ids_file = base.with_suffix(".ids")
    count = 0
    try:
        with atomic_output(ids_file) as handle:
            for chunk in ids:
                if not chunk.numel():
                    continue
                buffer = bytearray(chunk.numel() * dtype.itemsize)
                torch.frombuffer(buffer, dtype=dtype).copy_(chunk)
                handle.write(buffer)
                count += chunk.numel()
        header = {"format": TOKEN_CACHE_FORMAT, "vocab": vocab, "tokens": count,
                  "dtype": str(dtype).removeprefix("torch."), "edges": _edges_digest(ids_file),
                  "left_out": list(left_out)}
        atomic_write_bytes(base.with_suffix(".json"), json.dumps(header).encode())
    except OSError as error:
        raise DataError(f"cannot write the token cache {ids_file}: {error.strerror or error}",
                        "free some disk space or set $CHARGPT_TUI_CACHE to a writable folder"
                        ) from None
    slot, key = base.name.split("-")[:2]
    for old in base.parent.glob(f"{slot}-*"):
        if not old.name.startswith(f"{slot}-{key}"):
            old.unlink(missing_ok=True)
    encoded = read_token_cache(base)
    if encoded is None:
        raise DataError(f"the token cache {ids_file} did not read back",
                        "set $CHARGPT_TUI_CACHE to a folder on a local disk")
    return encoded


@dataclass
class TokenizedData:
    """A corpus as id tensors, split 90/10 into train and validation as in the lecture."""

    train: torch.Tensor
    val: torch.Tensor


def split_tokens(data: torch.Tensor, block_size: int) -> TokenizedData:
    """Split ids 90/10; each split must hold at least one full ``block_size + 1`` window."""
    n = int(0.9 * len(data))
    train, val = data[:n], data[n:]
    if min(len(train), len(val)) < block_size + 1:
        raise DataError(
            f"the text is too short for block size {block_size}: {len(data)} characters give "
            f"{len(train)} train / {len(val)} validation, each needs at least {block_size + 1}",
            f"use more text (≥ {(block_size + 1) * 10 + 10} characters) or a smaller --block-size",
        )
    return TokenizedData(train, val)


def split_data(text: str, tokenizer: CharTokenizer, block_size: int) -> TokenizedData:
    """Encode a text held in memory and split it (see :func:`split_tokens`)."""
    return split_tokens(encode_text(text, tokenizer.vocab), block_size)


def get_batch(
    data: torch.Tensor,
    block_size: int,
    batch_size: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random contiguous windows: ``x`` is a window, ``y`` the same window shifted by one.

    Every position in ``y`` is the next character after the matching prefix of ``x``, so one
    window gives ``block_size`` training examples at once.
    """
    import torch

    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    x = torch.stack([data[i : i + block_size] for i in starts.tolist()])
    y = torch.stack([data[i + 1 : i + block_size + 1] for i in starts.tolist()])
    # Ids are stored small (uint8/uint16, see token_dtype); embeddings index with int64.
    return x.long(), y.long()
