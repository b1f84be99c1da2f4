"""The registry client's own connection (``retentiond.registry_wire``): reuse, a kept-alive
connection closed by the server, credentials, a path prefix, and when httpx takes over.

The integration tests (test_verification, test_apply, ...) send these requests to the real
registry; here a small HTTP server of the test's own stands in, because the real registry cannot
be made to drop a kept-alive connection, or not answer, at a moment the test chooses."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from retentiond.errors import RegistryError
from retentiond.registry import RegistryClient
from retentiond.registry_wire import Wire, WireError, proxied, wire_for


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: ClassVar[list[tuple[str, str, str, int]]] = []
    #: close the connection after this many answers on it (0: never)
    close_after: ClassVar[int] = 0
    delay: ClassVar[float] = 0.0

    def _answer(self, body: bytes) -> None:
        self.answered = getattr(self, "answered", 0) + 1
        self.seen.append(
            (self.command, self.path, self.headers.get("Authorization", ""), self.client_address[1])
        )
        if self.delay:
            threading.Event().wait(self.delay)
        try:
            self._send(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (the timeout test)
            self.close_connection = True

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Docker-Content-Digest", "sha256:abc")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Location", "/v2/elsewhere")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        if self.close_after and self.answered >= self.close_after:
            self.close_connection = True  # silently, as a registry's idle timeout does

    def do_GET(self) -> None:
        self._answer(b'{"repositories": ["a", "b"]}')

    def do_HEAD(self) -> None:
        self._answer(b"")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Handler.seen = []
    _Handler.close_after = 0
    _Handler.delay = 0.0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _wire(url: str, **kw: object) -> Wire:
    settings: dict[str, object] = {
        "auth": None,
        "verify": True,
        "timeout": 5.0,
        "user_agent": "t/1",
        **kw,
    }
    return Wire(url, **settings)  # type: ignore[arg-type]


def test_one_connection_is_kept_for_every_request(server: str) -> None:
    wire = _wire(server)
    answers = [wire.request("GET", "/v2/_catalog"), wire.request("HEAD", "/v2/x/blobs/d")]
    wire.close()
    assert [a.status_code for a in answers] == [200, 200]
    assert answers[0].content == b'{"repositories": ["a", "b"]}'
    assert answers[1].content == b""
    assert answers[0].headers["docker-content-digest"] == "sha256:abc"
    assert answers[0].location() == f"{server}/v2/elsewhere"
    ports = {port for *_, port in _Handler.seen}
    assert len(ports) == 1  # one connection: the HEAD went over the GET's


def test_a_connection_the_server_closed_is_opened_again_once(server: str) -> None:
    _Handler.close_after = 1  # every connection is closed after its first answer
    wire = _wire(server)
    statuses = [wire.request("GET", "/v2/").status_code for _ in range(4)]
    wire.close()
    assert statuses == [200] * 4
    assert len(_Handler.seen) == 4  # each sent once: nothing answered twice
    assert len({port for *_, port in _Handler.seen}) == 4


def test_credentials_and_the_urls_path_go_with_every_request(server: str) -> None:
    wire = _wire(server + "/registry/", auth=("ci", "s3cret"))
    wire.request("GET", "/v2/")
    wire.request("HEAD", "/v2/a/manifests/t", {"Accept": "x"})
    wire.close()
    assert [(m, p) for m, p, _, _ in _Handler.seen] == [
        ("GET", "/registry/v2/"),
        ("HEAD", "/registry/v2/a/manifests/t"),
    ]
    assert {auth for _, _, auth, _ in _Handler.seen} == {"Basic Y2k6czNjcmV0"}


def test_no_answer_in_time_is_an_error_not_a_hang(server: str) -> None:
    _Handler.delay = 2.0
    wire = _wire(server, timeout=0.3)
    with pytest.raises(WireError, match="timed out"):
        wire.request("GET", "/v2/")
    wire.close()


def test_a_registry_that_is_not_there_is_a_registry_error() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with RegistryClient(f"http://127.0.0.1:{port}") as client:
        assert not client.answering()
        with pytest.raises(RegistryError, match=r"did not answer GET /v2/: .*registry.url"):
            client.check_health()


def test_the_registry_client_sends_through_the_wire(server: str) -> None:
    with RegistryClient(server) as client:
        assert client.catalog() == ["a", "b"]
        assert client.blob_status("a", "sha256:abc") == 200
    assert len({port for *_, port in _Handler.seen}) == 1


def test_a_proxy_from_the_environment_is_left_to_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    kw: dict[str, object] = {"auth": None, "verify": True, "timeout": 1.0, "user_agent": "t"}
    assert wire_for("https://registry.example:5000", **kw) is not None  # type: ignore[arg-type]
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert proxied("https://registry.example:5000")
    assert wire_for("https://registry.example:5000", **kw) is None  # type: ignore[arg-type]
    assert not proxied("http://registry.example:5000")  # no proxy for plain http
    monkeypatch.setenv("NO_PROXY", "registry.example")
    assert not proxied("https://registry.example:5000")


def test_what_a_url_cannot_hold_is_percent_encoded(server: str) -> None:
    wire = _wire(server)
    wire.request("HEAD", "/v2/app/manifests/a tag\x01é?n=1&last=x%2Fy")
    wire.close()
    assert [p for _, p, _, _ in _Handler.seen] == [
        "/v2/app/manifests/a%20tag%01%C3%A9?n=1&last=x%2Fy"
    ]
