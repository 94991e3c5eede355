"""Edge cases at the seams of an exchange: an app that answers before the request body is through
(then the body turns bad), send timeouts both ways, a full listen queue, idle tunnels against the
client timeouts, a 101 without Upgrade, HTTP/1.0 without Host on port 0, and `check` with nginx."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from sockgate.cli import main
from tests.conftest import ProxyFactory, RawFactory
from tests.support.clients import DEADLINE, RawClient, read_head, request_bytes, wait_gate
from tests.support.proc import Proxy, free_port, wait_for_line
from tests.support.rawapp import OK, Conn

MiB = 1024 * 1024
LAST_CHUNK = b"0\r\n\r\n"
CHUNKED_REQUEST = [("Transfer-Encoding", "chunked")]
UPGRADE = [("Connection", "Upgrade"), ("Upgrade", "echo-proto")]


def logs(proxy: Proxy) -> Path:
    return proxy.config_path.parent / "work" / "logs"


@pytest.fixture
def gate(raw_app: RawFactory) -> Iterator[threading.Event]:
    """Holds scripted apps until the test is done; set before the apps are stopped (this fixture
    depends on raw_app, so it is torn down first)."""
    event = threading.Event()
    yield event
    event.set()


class EarlyAnswer:
    """Reads the request head only, answers with `response` at once (the body unread), then
    waits on `gate`."""

    def __init__(self, response: bytes, gate: threading.Event) -> None:
        self.response = response
        self.gate = gate

    async def __call__(self, conn: Conn) -> None:
        await read_head(conn)
        await conn.send(self.response)
        await wait_gate(self.gate)


def chunked_post(target: str = "/app1/up") -> bytes:
    """The head of a chunked POST; its chunks follow separately."""
    return request_bytes(target, "POST", headers=CHUNKED_REQUEST, content_length=False)


# --- 1, 2. the app answered early, then the request body turns bad ------------------------------

CHUNKED_START = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n"
CLOSE_DELIMITED_START = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\npartial"


def early_answer_then(
    make_proxy: ProxyFactory,
    raw_app: RawFactory,
    gate: threading.Event,
    answer: bytes,
    first_body: bytes,
    bad: bytes,
    extra: str = "",
) -> RawClient:
    """The app answers after the head; once the client has the answer's first bytes it sends
    `bad`. Returns the client after the proxy closed it (the response is its first)."""
    app = raw_app(EarlyAnswer(answer, gate))
    proxy = make_proxy({"app1": app.path}, extra=extra)
    client = RawClient(proxy.port)
    try:
        client.send(chunked_post() + b"5\r\nhello\r\n")
        response = client.head()
        assert response.status == 200
        client.body_until(response, first_body)
        client.send(bad)
        client.read_to_close()
    finally:
        client.close()
    return client


def test_invalid_chunk_size_after_an_early_chunked_answer_never_completes_it(
    make_proxy: ProxyFactory, raw_app: RawFactory, gate: threading.Event
) -> None:
    client = early_answer_then(
        make_proxy, raw_app, gate, CHUNKED_START, b"first", b"zz\r\nnot a chunk\r\n"
    )
    response = client.responses[0]
    assert client.eof
    assert not response.complete, bytes(client.received)
    assert bytes(response.body) == b"first"
    assert not client.received.endswith(LAST_CHUNK)
    assert len(client.responses) == 1  # no 400 page after the head that is already out


def test_body_over_max_body_size_after_an_early_answer_never_completes_it(
    make_proxy: ProxyFactory, raw_app: RawFactory, gate: threading.Event
) -> None:
    too_much = b"x" * 2048
    client = early_answer_then(
        make_proxy,
        raw_app,
        gate,
        CHUNKED_START,
        b"first",
        b"%x\r\n%s\r\n" % (len(too_much), too_much),
        extra='max_body_size = "1k"',
    )
    response = client.responses[0]
    assert client.eof
    assert not response.complete, bytes(client.received)
    assert bytes(response.body) == b"first"
    assert len(client.responses) == 1


def test_close_delimited_early_answer_is_not_completed_by_a_bad_body(
    make_proxy: ProxyFactory, raw_app: RawFactory, gate: threading.Event
) -> None:
    """The app's own close would end this body; the proxy's abort of the app connection after
    the client's bad chunk must not pass for it: no last chunk to an HTTP/1.1 client."""
    client = early_answer_then(
        make_proxy, raw_app, gate, CLOSE_DELIMITED_START, b"partial", b"zz\r\nnot a chunk\r\n"
    )
    response = client.responses[0]
    # An HTTP/1.1 client gets a close-delimited body re-chunked: only the last chunk ends it.
    assert response.header("Transfer-Encoding") == b"chunked"
    assert client.eof
    assert not response.complete, bytes(client.received)
    assert bytes(response.body) == b"partial"
    assert LAST_CHUNK not in bytes(client.received)


# --- 3. an early answer closes the connection ---------------------------------------------------


@pytest.mark.nginx_difference(
    "nginx says `Connection: keep-alive` on an answer that came before the body (it then "
    "closes all the same)"
)
def test_answer_before_the_body_is_through_says_connection_close(
    make_proxy: ProxyFactory, raw_app: RawFactory, gate: threading.Event
) -> None:
    app = raw_app(EarlyAnswer(OK, gate))
    proxy = make_proxy({"app1": app.path})
    with RawClient(proxy.port) as client:
        # Half of a 10-byte body: what follows could not be told from a next request.
        client.send(request_bytes("/app1/up", "POST", headers=[("Content-Length", "10")]))
        client.send(b"12345")
        response = client.response()
        assert response.status == 200
        assert bytes(response.body) == b"ok"
        assert response.header("Connection") == b"close"
        assert client.closed_by_peer()
    assert len(client.responses) == 1


# --- 4. the app stops reading the request body ----------------------------------------------------


class Uploader:
    """Sends a request head and `size` bytes of body from a thread; a failing send is expected
    once the proxy gives up (it is kept in `error`)."""

    def __init__(self, sock: socket.socket, head: bytes, size: int) -> None:
        self.sock = sock
        self.head = head
        self.size = size
        self.sent = 0
        self.error: OSError | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Uploader:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.join(DEADLINE * 2)
        assert not self.thread.is_alive(), "the upload never ended"

    def _run(self) -> None:
        block = b"u" * (256 * 1024)
        try:
            self.sock.sendall(self.head)
            while self.sent < self.size:
                self.sock.sendall(block)
                self.sent += len(block)
        except OSError as exc:
            self.error = exc


def upload_to_an_app_that_never_reads(
    make_proxy: ProxyFactory, raw_app: RawFactory, gate: threading.Event
) -> tuple[Proxy, Path, RawClient, Uploader]:
    """64 MiB to an app that reads the head and then nothing, with send = 1s; returns once the
    proxy has closed the client connection (the client's first response is the answer)."""
    seen = threading.Event()

    async def never_reads_the_body(conn: Conn) -> None:
        await read_head(conn)
        seen.set()
        await wait_gate(gate)

    app = raw_app(never_reads_the_body)
    proxy = make_proxy({"app1": app.path}, timeouts='send = "1s"')
    head = request_bytes("/app1/up", "POST", headers=[("Content-Length", str(64 * MiB))])
    with RawClient(proxy.port) as client, Uploader(client.sock, head, 64 * MiB) as upload:
        assert seen.wait(DEADLINE)
        client.response()
        assert client.closed_by_peer()
    return proxy, app.path, client, upload


def test_app_that_stops_reading_the_body_gets_504_after_the_send_timeout(
    make_proxy: ProxyFactory, raw_app: RawFactory, gate: threading.Event
) -> None:
    _, _, client, _ = upload_to_an_app_that_never_reads(make_proxy, raw_app, gate)
    assert client.responses[0].status == 504, bytes(client.received)
    assert len(client.responses) == 1


@pytest.mark.nginx_difference(
    "nginx's own 504 page names no fault and says keep-alive, its error.log says 'upstream "
    "timed out', and it reads the rest of the body before it closes"
)
def test_app_that_stops_reading_the_body_is_named(
    make_proxy: ProxyFactory, raw_app: RawFactory, gate: threading.Event
) -> None:
    proxy, sock, client, upload = upload_to_an_app_that_never_reads(make_proxy, raw_app, gate)
    response = client.responses[0]
    assert response.status == 504
    assert response.header("Connection") == b"close"
    assert b"app stopped reading the request body" in response.body
    assert f"socket: {sock}".encode() in response.body
    line = wait_for_line(logs(proxy) / "error.log", "stopped reading")
    assert "'app1'" in line
    assert str(sock) in line
    assert "POST /app1/up HTTP/1.1" in line
    wait_for_line(logs(proxy) / "access.log", '"POST /app1/up HTTP/1.1" 504 ')
    # The rest of the body is not read (nor drained): the upload fails far from its end.
    assert isinstance(upload.error, ConnectionResetError | BrokenPipeError), upload.error
    assert upload.sent < 64 * MiB


# --- 5. the client stops reading the response ----------------------------------------------------


def test_client_that_stops_reading_is_closed_after_the_send_timeout(
    make_proxy: ProxyFactory, starlette_sock: Path
) -> None:
    proxy = make_proxy({"st": starlette_sock}, timeouts='send = "1s"')
    size = 64 * MiB
    with RawClient(proxy.port) as client:
        client.send(request_bytes("/st/big?mb=64"))
        # The client reads nothing until the exchange has ended (the access log line is written
        # then): what the kernel buffered is all that is left, then the end of the connection.
        wait_for_line(logs(proxy) / "access.log", "GET /st/big?mb=64", deadline=DEADLINE)
        client.read_to_close()
    response = client.responses[0]
    assert response.status == 200
    assert client.eof
    assert not response.complete
    assert len(response.body) < size


# --- 6. a full listen queue -----------------------------------------------------------------------


@pytest.fixture
def full_listen_queue(tmp: Path) -> Iterator[Path]:
    """A socket that listens with a backlog of 0 and never accepts, its queue filled until a
    non-blocking connect gets EAGAIN (proof that the kernel refuses the next one)."""
    path = tmp / "full.sock"
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.socket(socket.AF_UNIX))
        listener.bind(str(path))
        listener.listen(0)
        for _ in range(8):
            filler = stack.enter_context(socket.socket(socket.AF_UNIX))
            filler.setblocking(False)
            try:
                filler.connect(str(path))
            except BlockingIOError:
                break
        else:
            pytest.fail("the listen queue never filled: EAGAIN cannot be provoked here")
        yield path


@pytest.mark.nginx_difference("nginx answers EAGAIN on a Unix socket at once with its generic 502")
def test_full_listen_queue_is_retried_then_504(
    make_proxy: ProxyFactory, full_listen_queue: Path
) -> None:
    proxy = make_proxy({"app1": full_listen_queue}, timeouts='connect = "1s"')
    with RawClient(proxy.port) as client:
        client.send(request_bytes("/app1/"))
        response = client.response()
    assert response.status == 504, bytes(client.received)
    assert b"listen queue stayed full" in response.body
    line = wait_for_line(logs(proxy) / "error.log", "listen queue stayed full")
    assert str(full_listen_queue) in line


# --- 7. an idle tunnel is not an idle keep-alive connection ---------------------------------------


async def echo_tunnel(conn: Conn) -> None:
    """Accepts any upgrade with 101, then echoes every byte."""
    _, rest = await read_head(conn)
    await conn.send(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo-proto\r\n\r\n"
        + rest
    )
    while data := await conn.reader.read(65536):
        await conn.send(data)


def test_idle_tunnel_outlives_keepalive_and_client_header(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    app = raw_app(echo_tunnel)
    proxy = make_proxy(
        {"app1": app.path}, timeouts='keepalive = "1s"\nclient_header = "1s"\nread = "30s"'
    )
    with RawClient(proxy.port) as client:
        client.send(request_bytes("/app1/tunnel", headers=UPGRADE))
        assert client.head().status == 101
        client.send(b"before")
        client.tunnel_until(b"before")
        # Idle for well over both client timeouts: the read must time out, not see the end.
        client.sock.settimeout(2.5)
        with pytest.raises(TimeoutError):
            client.read_once()
        client.sock.settimeout(DEADLINE)
        client.send(b"after the pause")
        client.tunnel_until(b"after the pause")
    assert bytes(client.tunnel) == b"beforeafter the pause"


# --- 8. a 101 that names no protocol ------------------------------------------------------------


@pytest.mark.nginx_difference(
    "nginx opens the tunnel on any 101 to a request that asked to upgrade"
)
def test_101_without_upgrade_header_gets_502_and_no_tunnel(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    hung_up = threading.Event()

    async def switches_to_nothing(conn: Conn) -> None:
        await read_head(conn)
        try:
            await conn.send(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n")
            # The proxy may hang up before these go out: a reset here is the same answer.
            await conn.send(b"tunnel bytes")
            while await conn.reader.read(65536):
                pass
        finally:
            hung_up.set()  # at the end of stream or a reset

    app = raw_app(switches_to_nothing)
    proxy = make_proxy({"app1": app.path})
    with RawClient(proxy.port) as client:
        client.send(request_bytes("/app1/tunnel", headers=UPGRADE))
        response = client.response()
        assert response.status == 502, bytes(client.received)
        assert b"no Upgrade header" in response.body
        assert client.closed_by_peer()
    assert not client.upgraded
    assert b"tunnel bytes" not in client.received
    assert hung_up.wait(DEADLINE), "the proxy kept the app connection open"


# --- 9. HTTP/1.0 without Host on port 0 -----------------------------------------------------------


@pytest.mark.nginx_difference("nginx stands in its server_name (localhost) for a missing Host")
def test_http10_without_host_gets_the_real_port(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    app = raw_app()
    proxy = make_proxy({"app1": app.path})  # the built-in engine listens on port 0
    with RawClient(proxy.port) as client:
        client.send(request_bytes("/app1/", host="", version="1.0"))
        assert client.response().status == 200
    assert app.requests[0].header_all(b"host") == [f"127.0.0.1:{proxy.port}".encode()]


# --- 10. check --engine nginx -------------------------------------------------------------------


def test_check_with_nginx_runs_nginx_t(
    raw_app: RawFactory, tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = raw_app()
    monkeypatch.chdir(tmp)
    result = CliRunner().invoke(
        main,
        # A free port, not 8080 (`check` probes it) nor 0 (which nginx refuses).
        [
            "check",
            "--engine",
            "nginx",
            "--listen",
            f"127.0.0.1:{free_port()}",
            "--app",
            f"a={app.path}",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert f"nginx -t ok: {tmp / 'conf' / 'nginx.conf'}" in result.stdout
    assert "ok (200)" in result.stdout


def test_check_with_nginx_shows_what_nginx_refuses(
    raw_app: RawFactory, tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = raw_app()
    monkeypatch.chdir(tmp)
    # A host nginx cannot resolve; not loopback, so the config has to allow it first.
    (tmp / "sockgate.toml").write_text('listen = "999.1.1.1:80"\nallow_remote = true\n')
    result = CliRunner().invoke(
        main,
        ["check", "--engine", "nginx", "--app", f"a={app.path}"],
        catch_exceptions=False,
    )
    assert result.exit_code == 1, result.output
    assert "nginx -t ok" not in result.stdout
    assert "sockgate: nginx rejected" in result.stderr
    assert 'nginx: [emerg] host not found in "999.1.1.1:80" of the "listen" directive' in (
        result.stderr
    )
