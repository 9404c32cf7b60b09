"""Downloads against a real HTTP server on 127.0.0.1: every failure is one line, the cache never
holds half a file, a cached copy is used without the network, and the default corpus falls back
to an offline one. Timeouts and the size cap are shrunk through their environment variables, so
the slow cases take about half a second.
"""

from __future__ import annotations

import collections
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from corpus import pseudo_shakespeare
from helpers_robust import TINY_MODEL, assert_one_line_error, invoke

from chargpt_tui.data import load_dataset, load_local_dataset, url_cache_name

CORPUS = pseudo_shakespeare(lines=200)
CAP = 4096  # bytes; the corpus above is bigger, so the cap cases can use it
assert len(CORPUS.encode()) > CAP


class Routes(BaseHTTPRequestHandler):
    """One path per way a download can go wrong (and one where it goes right)."""

    def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
        server: LoopbackServer = self.server  # type: ignore[assignment]
        server.hits[self.path] += 1
        body = CORPUS.encode()
        if self.path in ("/corpus.txt", "/mirror/input.txt"):
            self.reply(200, "text/plain; charset=utf-8", body)
        elif self.path == "/missing.txt":
            self.reply(404, "text/plain", b"no such file")
        elif self.path == "/broken.txt":
            self.reply(500, "text/plain", b"oops")
        elif self.path == "/picture.png":
            self.reply(200, "image/png", b"\x89PNG\r\n\x1a\n" + bytes(100))
        elif self.path == "/huge.txt":  # announces its size: refused before the body
            self.reply(200, "text/plain", body)
        elif self.path == "/unannounced.txt":  # no Content-Length: the cap applies while reading
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(body)
        elif self.path == "/silent.txt":  # never answers: read timeout before the headers
            server.release.wait(10)
        elif self.path == "/stalls.txt":  # sends part of the body, then stops
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(CAP // 2))  # under the cap
            self.end_headers()
            self.wfile.write(body[:500])
            self.wfile.flush()
            server.release.wait(10)
        else:
            self.reply(404, "text/plain", b"unknown route")

    def reply(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass  # keep pytest's output clean


class LoopbackServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Routes)
        self.hits: collections.Counter[str] = collections.Counter()
        self.release = threading.Event()  # lets the slow handlers finish at teardown

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


@pytest.fixture(scope="module")
def server() -> Iterator[LoopbackServer]:
    httpd = LoopbackServer()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.release.set()
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("CHARGPT_TUI_CACHE", str(folder))
    monkeypatch.setenv("CHARGPT_TUI_HTTP_TIMEOUT", "0.5")
    monkeypatch.setenv("CHARGPT_TUI_MAX_DOWNLOAD_BYTES", str(CAP))
    for proxy in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
                  "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)  # loopback only, never through a proxy
    return folder


def cache_files(cache: Path) -> list[Path]:
    """Everything in the cache, hidden temp files included."""
    return sorted(cache.rglob("*")) if cache.exists() else []


def refused_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def train_on(url: str, tmp_path: Path) -> list[str]:
    return ["train", "--data", url, *TINY_MODEL, "--max-iters", "2", "--out",
            str(tmp_path / "run"), "--json"]


@pytest.mark.parametrize(("path", "needles"), [
    ("/missing.txt", ("HTTP 404", "/missing.txt")),
    ("/broken.txt", ("HTTP 500", "/broken.txt")),
    ("/picture.png", ("not text", "image/png")),
    ("/huge.txt", ("over the 4096 byte cap", f"{len(CORPUS.encode())} bytes")),
    ("/unannounced.txt", ("over the 4096 byte cap", "/unannounced.txt")),
    ("/silent.txt", ("timed out", "/silent.txt")),
    ("/stalls.txt", ("timed out", "/stalls.txt")),
])
def test_download_failure_is_one_line_and_caches_nothing(
        path: str, needles: tuple[str, ...], server: LoopbackServer, cache: Path,
        tmp_path: Path) -> None:
    started = time.monotonic()
    assert_one_line_error(invoke(*train_on(server.url(path), tmp_path)), *needles)
    assert server.hits[path] >= 1  # the request really reached the server
    assert cache_files(cache) == []  # nothing half-written
    assert time.monotonic() - started < 20  # a stuck read would hang; not a timing target


def test_connection_refused(cache: Path, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{refused_port()}/corpus.txt"
    assert_one_line_error(invoke(*train_on(url, tmp_path)), "connection failed", url)
    assert cache_files(cache) == []


def test_dns_failure(cache: Path, tmp_path: Path) -> None:
    # ".invalid" is reserved (RFC 2606): resolution fails without traffic leaving the machine.
    url = "http://no-such-host.invalid/corpus.txt"
    assert_one_line_error(invoke(*train_on(url, tmp_path)), "DNS lookup failed", url)
    assert cache_files(cache) == []


def test_bad_timeout_setting_is_a_clear_error(server: LoopbackServer, cache: Path,
                                              tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHARGPT_TUI_HTTP_TIMEOUT", "soon")
    assert_one_line_error(invoke(*train_on(server.url("/corpus.txt"), tmp_path)),
                          "CHARGPT_TUI_HTTP_TIMEOUT", "'soon'")


def test_first_download_is_cached_atomically_and_never_fetched_again(
        server: LoopbackServer, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHARGPT_TUI_MAX_DOWNLOAD_BYTES")
    url = server.url("/corpus.txt")
    before = server.hits["/corpus.txt"]
    assert load_dataset(url).files[0].read_text() == CORPUS
    assert server.hits["/corpus.txt"] == before + 1
    assert cache_files(cache) == [cache / url_cache_name(url)]  # and no temp file beside it
    assert (cache / url_cache_name(url)).read_text() == CORPUS
    assert load_dataset(url).files[0].read_text() == CORPUS
    assert server.hits["/corpus.txt"] == before + 1  # the second run did not touch the server


def test_cached_copy_is_used_when_the_server_fails(server: LoopbackServer, cache: Path) -> None:
    url = server.url("/broken.txt")
    cache.mkdir()
    (cache / url_cache_name(url)).write_text("KING: cached words\n" * 50)
    before = server.hits["/broken.txt"]
    assert load_dataset(url).files[0].read_text().startswith("KING: cached words")
    assert server.hits["/broken.txt"] == before


def test_default_corpus_downloads_from_the_overridden_url_once(
        server: LoopbackServer, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHARGPT_TUI_MAX_DOWNLOAD_BYTES")
    monkeypatch.setenv("CHARGPT_TUI_SHAKESPEARE_URL", server.url("/mirror/input.txt"))
    before = server.hits["/mirror/input.txt"]
    notices: list[str] = []
    corpus = load_dataset("shakespeare", notice=notices.append)
    assert (corpus.name, corpus.files[0].read_text(), notices) == ("shakespeare", CORPUS, [])
    assert load_dataset("shakespeare").files[0].read_text() == CORPUS
    assert server.hits["/mirror/input.txt"] == before + 1
    assert cache_files(cache) == [cache / "tinyshakespeare.txt"]


def test_offline_first_run_of_the_default_falls_back_with_one_notice(
        cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Engine level: training on the 1.5 MB fallback corpus through the CLI would cost seconds.
    monkeypatch.setenv("CHARGPT_TUI_SHAKESPEARE_URL",
                       f"http://127.0.0.1:{refused_port()}/input.txt")
    notices: list[str] = []
    corpus = load_dataset("shakespeare", notice=notices.append)
    assert corpus.name == "python-stdlib" and "def " in (corpus.text or "")
    assert len(notices) == 1 and "\n" not in notices[0]
    assert "could not download Tiny Shakespeare" in notices[0] and "--data" in notices[0]
    assert cache_files(cache) == []


def test_a_local_look_at_a_runs_data_never_downloads(
        server: LoopbackServer, cache: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """What a checkpoint opened for chat only reads its validation text from: only what this
    machine has (the server counts any request)."""
    monkeypatch.delenv("CHARGPT_TUI_MAX_DOWNLOAD_BYTES")
    monkeypatch.setenv("CHARGPT_TUI_SHAKESPEARE_URL", server.url("/mirror/input.txt"))
    url = server.url("/corpus.txt")
    before = sum(server.hits.values())
    assert load_local_dataset(url) is None and load_local_dataset("shakespeare") is None
    assert load_local_dataset(str(tmp_path / "gone.txt")) is None
    assert load_local_dataset("ftp://example.org/x.txt") is None
    assert sum(server.hits.values()) == before
    load_dataset(url)  # cached from now on
    load_dataset("shakespeare")
    local = tmp_path / "mine.txt"
    local.write_text("JULIET: words\n" * 20)
    for spec, text in ((url, CORPUS), ("shakespeare", CORPUS), (str(local), local.read_text())):
        found = load_local_dataset(spec)
        assert found is not None and found.name == spec and len(found.files) == 1
        assert found.files[0].read_text() == text
    assert sum(server.hits.values()) == before + 2  # the two loads above, nothing more
