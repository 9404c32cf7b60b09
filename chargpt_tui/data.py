"""Training text: where it comes from, how it is cached, and how batches are cut from it.

``--data`` takes a builtin name (``shakespeare``, ``python-stdlib``), a local path, or an http(s)
URL. Downloads are streamed with ``requests`` (timeouts, a size cap), written to the user cache
atomically and never fetched twice. If the default corpus cannot be downloaded on a first run, an
offline corpus built from the running Python's standard library keeps the app usable.
"""

from __future__ import annotations

import hashlib
import os
import sys
import sysconfig
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

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

# (bytes so far, total bytes or None) — the CLI draws a rich progress bar from it.
ProgressCallback = Callable[[int, "int | None"], None]
NoticeCallback = Callable[[str], None]


@dataclass(frozen=True)
class Corpus:
    """A training text and where it came from (shown in the UI and stored in checkpoints)."""

    text: str
    name: str


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
) -> Corpus:
    """Resolve ``--data`` to text. Raises :class:`DataError` with a one-line message."""
    if spec == "shakespeare":
        try:
            return Corpus(fetch_url(shakespeare_url(), "tinyshakespeare.txt", progress), spec)
        except DataError as error:
            # Only the *default* corpus falls back: an explicit path or URL that fails is an error.
            if notice:
                notice(
                    f"could not download Tiny Shakespeare ({error.message}); training on the "
                    "Python standard library's sources instead — pass --data PATH or URL to choose"
                )
            return Corpus(python_stdlib_corpus(), "python-stdlib")
    if spec == "python-stdlib":
        return Corpus(python_stdlib_corpus(), spec)
    if spec.startswith(("http://", "https://")):
        return Corpus(fetch_url(spec, url_cache_name(spec), progress, encoding), spec)
    if "://" in spec:
        raise DataError(f"unsupported URL scheme in {spec!r}", "use an http(s) URL or a local path")
    return Corpus(read_text_file(Path(spec).expanduser(), encoding), spec)


def load_local_dataset(spec: str, encoding: str = "utf-8") -> Corpus | None:
    """``spec``'s text if this machine has it (a file, the download cache, the stdlib corpus),
    never downloading; None if it has not (or it cannot be read). For looking at a trained
    run's text later, e.g. a checkpoint opened for chat only; training uses :func:`load_dataset`.
    """
    if spec == "python-stdlib":
        path = None
    elif spec == "shakespeare":
        path = cache_dir() / "tinyshakespeare.txt"
    elif spec.startswith(("http://", "https://")):
        path = cache_dir() / url_cache_name(spec)
    elif "://" in spec:
        return None
    else:
        path = Path(spec).expanduser()
    try:
        text = python_stdlib_corpus() if path is None else read_text_file(path, encoding)
    except DataError:
        return None
    return Corpus(text, spec)


def read_text_file(path: Path, encoding: str = "utf-8") -> str:
    """Read a local corpus, turning every way it can fail into a one-line :class:`DataError`."""
    try:
        if not path.exists():
            raise DataError(f"data file not found: {path}", "check the path given to --data")
        if path.is_dir():
            raise DataError(f"--data is a folder, not a file: {path}", "point it at one text file")
        if not path.is_file():
            # A FIFO or device would block or never end: reading it is never what was meant.
            raise DataError(f"--data is not a regular file: {path}",
                            "point it at a text file (not a pipe, socket or device)")
        raw = path.read_bytes()
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror or error}",
                        "check that it exists and that you may read it") from None
    return decode_text(raw, str(path), encoding)


def decode_text(raw: bytes, source: str, encoding: str = "utf-8") -> str:
    """Bytes → text; refuses binaries rather than building a vocabulary of garbage."""
    if not raw:
        raise DataError(f"{source} is empty", "train on a file with some text in it")
    if b"\x00" in raw[:1_000_000]:
        raise DataError(f"{source} looks like a binary file (it has NUL bytes)", "use a text file")
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as error:
        raise DataError(
            f"{source} is not valid {encoding} text (bad byte at offset {error.start})",
            "pass --encoding (e.g. --encoding latin-1) or convert the file to UTF-8",
        ) from None
    except LookupError:
        raise DataError(f"unknown text encoding {encoding!r}", "try --encoding utf-8") from None


def url_cache_name(url: str) -> str:
    """A stable cache file name for a URL: a short hash plus the URL's last path part."""
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    tail = url.rstrip("/").rsplit("/", 1)[-1].split("?")[0][:40] or "data"
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in tail)
    return f"{digest}-{safe}"


def fetch_url(url: str, cache_name: str, progress: ProgressCallback | None = None,
              encoding: str = "utf-8") -> str:
    """Text at ``url``, from the cache when present, else downloaded once and cached atomically."""
    cached = cache_dir() / cache_name
    try:
        if cached.is_file():
            return decode_text(cached.read_bytes(), str(cached), encoding)
    except OSError:
        pass  # an unreadable cache entry is a cache miss: download again and replace it
    raw = download(url, progress)
    text = decode_text(raw, url, encoding)
    try:
        atomic_write_bytes(cached, raw)
    except OSError as error:
        raise DataError(f"cannot write the download cache {cached}: {error.strerror or error}",
                        "set $CHARGPT_TUI_CACHE to a writable folder") from None
    return text


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
    """Write via a temp file in the same folder, fsync, then rename: readers never see half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
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


@dataclass
class TokenizedData:
    """A corpus as id tensors, split 90/10 into train and validation as in the lecture."""

    train: torch.Tensor
    val: torch.Tensor


def split_data(text: str, tokenizer: CharTokenizer, block_size: int) -> TokenizedData:
    """Encode and split; each split must hold at least one full ``block_size + 1`` window."""
    import torch

    data = torch.tensor(tokenizer.encode(text), dtype=torch.long)
    n = int(0.9 * len(data))
    train, val = data[:n], data[n:]
    if min(len(train), len(val)) < block_size + 1:
        raise DataError(
            f"the text is too short for block size {block_size}: {len(data)} characters give "
            f"{len(train)} train / {len(val)} validation, each needs at least {block_size + 1}",
            f"use more text (≥ {(block_size + 1) * 10 + 10} characters) or a smaller --block-size",
        )
    return TokenizedData(train, val)


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
    return x, y
