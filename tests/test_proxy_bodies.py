"""Behaviour 5: request bodies stream to the app (Content-Length and chunked) with backpressure,
max_body_size gives 413, Expect: 100-continue works; responses stream to the client: the head
before the first body byte, SSE events one by one, big downloads in flat memory."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ProxyFactory, RawFactory
from tests.support.clients import (
    DEADLINE,
    RawClient,
    RequestWatcher,
    chunked,
    read_head,
    request_bytes,
    slow_reader_holds_the_app_back,
    vm_kib,
    wait_gate,
)
from tests.support.rawapp import Conn, Flood, offsets

MiB = 1024 * 1024


def count_response(count: int) -> bytes:
    text = b"%d" % count
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(text), text)


def body_echo_length(request_body: bytes) -> bytes:
    return count_response(len(request_body))


async def answer_with_length(conn: Conn) -> None:
    while (request := await conn.request()) is not None:
        await conn.send(body_echo_length(request.body))


# --- request bodies, byte-exact -----------------------------------------------------------------


def test_content_length_upload_is_byte_exact(make_proxy: ProxyFactory, raw_app: RawFactory) -> None:
    app = raw_app(answer_with_length)
    proxy = make_proxy({"app1": app.path})
    body = os.urandom(3 * MiB + 17)
    response = httpx.post(f"{proxy.url}/app1/up", content=body)
    assert response.status_code == 200
    assert response.text == str(len(body))
    seen = app.requests[0]
    assert seen.header_all(b"content-length") == [str(len(body)).encode()]
    assert seen.header(b"transfer-encoding") is None
    assert seen.body == body
    assert seen.raw.endswith(b"\r\n\r\n" + body)


def test_chunked_upload_is_reframed_byte_exact(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    app = raw_app(answer_with_length)
    proxy = make_proxy({"app1": app.path})
    parts = [os.urandom(n) for n in (1, 1000, 65536, 300_000, 7)]

    def gen() -> Iterator[bytes]:
        yield from parts

    response = httpx.post(f"{proxy.url}/app1/up", content=gen())
    assert response.status_code == 200
    assert response.text == str(sum(map(len, parts)))
    seen = app.requests[0]
    assert seen.header_all(b"transfer-encoding") == [b"chunked"]
    assert seen.header(b"content-length") is None
    assert seen.body == b"".join(parts)
    assert seen.raw.endswith(b"0\r\n\r\n")


@pytest.mark.nginx_difference(
    "nginx reads a chunked request body whole and forwards it with Content-Length"
)
def test_chunk_extensions_and_trailers_do_not_reach_the_app_as_framing(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    app = raw_app(answer_with_length)
    proxy = make_proxy({"app1": app.path})
    body = b"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
    with RawClient(proxy.port) as client:
        client.send(
            request_bytes(
                "/app1/up",
                "POST",
                headers=[("Transfer-Encoding", "chunked")],
                body=body,
                content_length=False,
            )
        )
        assert bytes(client.response().body) == b"11"
    seen = app.requests[0]
    assert seen.body == b"hello world"
    assert b"name=value" not in seen.raw
    assert seen.header_all(b"transfer-encoding") == [b"chunked"]


class StreamProbe:
    """Sees the first part of the body arrive before the client has sent the rest."""

    FIRST = b"<first part ends here>"
    LAST = b"<the end>"

    def __init__(self) -> None:
        self.first_seen = threading.Event()
        self.watcher = RequestWatcher()

    async def __call__(self, conn: Conn) -> None:
        w = self.watcher
        if not await w.read_until(conn, lambda w: self.FIRST in w.body):
            return
        self.first_seen.set()
        if not await w.read_until(conn, lambda w: w.complete):
            return
        await conn.send(body_echo_length(bytes(w.body)))


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_request_body_streams_to_the_app_as_it_arrives(
    make_proxy: ProxyFactory, raw_app: RawFactory, framing: str
) -> None:
    probe = StreamProbe()
    app = raw_app(probe)
    proxy = make_proxy({"app1": app.path})
    first = b"a" * 1000 + StreamProbe.FIRST
    rest = b"b" * 1000 + StreamProbe.LAST
    if framing == "chunked":
        head = request_bytes("/app1/up", "POST", headers=[("Transfer-Encoding", "chunked")])
        first_wire, rest_wire = b"%x\r\n%s\r\n" % (len(first), first), chunked(rest)
    else:
        head = request_bytes(
            "/app1/up", "POST", headers=[("Content-Length", str(len(first) + len(rest)))]
        )
        first_wire, rest_wire = first, rest
    with RawClient(proxy.port) as client:
        client.send(head + first_wire)
        assert probe.first_seen.wait(DEADLINE), "the app did not get the first part on its own"
        client.send(rest_wire)
        response = client.response()
    assert response.status == 200
    assert bytes(response.body) == str(len(first) + len(rest)).encode()
    assert bytes(probe.watcher.body) == first + rest


class SlowReader:
    """Reads the request head, then reads nothing until the test opens the gate; then counts
    the body (without keeping it) and answers with the count."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.head_seen = threading.Event()
        self.count = 0

    async def __call__(self, conn: Conn) -> None:
        head, rest = await read_head(conn)
        length = int(
            next(
                line.split(b":")[1]
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
        )
        self.head_seen.set()
        await wait_gate(self.gate, 30)
        count = len(rest)
        while count < length:
            data = await conn.reader.read(1 << 20)
            if not data:
                return
            count += len(data)
        self.count = count
        await conn.send(count_response(count))


def send_until_stalled(sock: socket.socket, data: memoryview, quiet: float = 1.0) -> int:
    """Send without blocking until the peer has not taken a byte for `quiet` seconds; returns
    how much was taken. A stall is the only thing to observe here, hence the quiet period."""
    sock.setblocking(False)
    sent = 0
    try:
        while sent < len(data):
            try:
                sent += sock.send(data[sent : sent + MiB])
            except BlockingIOError:
                _, writable, _ = select.select([], [sock], [], quiet)
                if not writable:
                    break
    finally:
        sock.setblocking(True)
    return sent


def test_upload_to_an_app_that_does_not_read_is_held_back(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    reader = SlowReader()
    app = raw_app(reader)
    proxy = make_proxy({"app1": app.path})
    assert proxy.proc is not None
    total = 96 * MiB
    body = memoryview(bytes(total))
    before = vm_kib(proxy.proc.pid, "VmHWM")
    with RawClient(proxy.port, timeout=30) as client:
        try:
            client.send(request_bytes("/app1/up", "POST", headers=[("Content-Length", str(total))]))
            assert reader.head_seen.wait(DEADLINE)
            taken = send_until_stalled(client.sock, body)
            grown = vm_kib(proxy.proc.pid, "VmHWM") - before
            assert taken < total // 2, f"the proxy took {taken} bytes the app never read"
            assert grown < 32 * 1024, f"the proxy grew by {grown} KiB holding the body"
        finally:
            reader.gate.set()
        client.send(body[taken:])
        response = client.response()
    assert response.status == 200
    assert bytes(response.body) == str(total).encode()
    assert reader.count == total


# --- max_body_size ------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["global", "per-app"])
def test_content_length_over_max_body_size_is_413(
    make_proxy: ProxyFactory, raw_app: RawFactory, where: str
) -> None:
    app = raw_app(answer_with_length)
    if where == "global":
        proxy = make_proxy({"app1": app.path}, extra='max_body_size = "1k"')
    else:
        proxy = make_proxy({"app1": {"socket": app.path, "max_body_size": "1k"}})
    too_big = httpx.post(f"{proxy.url}/app1/up", content=b"x" * 1025)
    assert too_big.status_code == 413
    assert app.connections == 0
    fits = httpx.post(f"{proxy.url}/app1/up", content=b"x" * 1024)
    assert fits.status_code == 200
    assert fits.text == "1024"


def test_limit_of_one_app_does_not_apply_to_another(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    small = raw_app(answer_with_length, name="small")
    big = raw_app(answer_with_length, name="big")
    proxy = make_proxy({"small": {"socket": small.path, "max_body_size": "1k"}, "big": big.path})
    assert httpx.post(f"{proxy.url}/small/", content=b"x" * 2048).status_code == 413
    response = httpx.post(f"{proxy.url}/big/", content=b"x" * 2048)
    assert response.status_code == 200
    assert response.text == "2048"


@pytest.mark.nginx_difference(
    "nginx answers 413 for an oversized chunked body but keeps the app connection it had opened"
)
def test_chunked_body_over_max_body_size_is_413(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    app = raw_app(answer_with_length)
    proxy = make_proxy({"app1": app.path}, extra='max_body_size = "1k"')
    with RawClient(proxy.port) as client:
        client.send(
            request_bytes(
                "/app1/up",
                "POST",
                headers=[("Transfer-Encoding", "chunked")],
                body=chunked(b"x" * 600, b"y" * 600),
                content_length=False,
            )
        )
        response = client.response()
        assert response.status == 413
        assert client.closed_by_peer()
    # The body streams, so the app got the head and the start of it; the proxy then cut the
    # request off before the last chunk: the app never saw a whole request.
    assert app.closed.wait(DEADLINE)
    assert app.requests == []


def test_chunked_body_within_max_body_size_passes(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    app = raw_app(answer_with_length)
    proxy = make_proxy({"app1": app.path}, extra='max_body_size = "1k"')
    with RawClient(proxy.port) as client:
        client.send(
            request_bytes(
                "/app1/up",
                "POST",
                headers=[("Transfer-Encoding", "chunked")],
                body=chunked(b"x" * 600, b"y" * 424),
                content_length=False,
            )
        )
        response = client.response()
    assert response.status == 200
    assert bytes(response.body) == b"1024"


# --- Expect: 100-continue -----------------------------------------------------------------------


def test_expect_100_continue_with_curl(
    make_proxy: ProxyFactory, starlette_sock: Path, tmp: Path
) -> None:
    proxy = make_proxy({"st": starlette_sock})
    upload = tmp / "upload.bin"
    upload.write_bytes(os.urandom(2 * MiB))
    # With a long expect timeout curl would sit for 30 s if the 100 never came through.
    result = subprocess.run(
        [
            "curl",
            "-sS",
            "-v",
            "--expect100-timeout",
            "30",
            "-H",
            "Expect: 100-continue",
            "--data-binary",
            f"@{upload}",
            f"{proxy.url}/st/upload",
        ],
        capture_output=True,
        timeout=20,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == str(2 * MiB).encode()
    assert b"< HTTP/1.1 100 Continue" in result.stderr


class ContinueApp:
    """Reads the head, answers 100 Continue, then reads the body and answers 200."""

    def __init__(self) -> None:
        self.head = b""
        self.body = b""

    async def __call__(self, conn: Conn) -> None:
        w = RequestWatcher()
        if not await w.read_until(conn, lambda w: w.head_done):
            return
        self.head = bytes(conn.received)
        await conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        if not await w.read_until(conn, lambda w: w.complete):
            return
        self.body = bytes(w.body)
        await conn.send(body_echo_length(self.body))


@pytest.mark.nginx_difference(
    "nginx answers `Expect: 100-continue` itself instead of passing on the app's 100"
)
def test_expect_100_continue_with_a_raw_client(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    app_handler = ContinueApp()
    app = raw_app(app_handler)
    proxy = make_proxy({"app1": app.path})
    body = b"the body, sent only after 100 Continue"
    with RawClient(proxy.port) as client:
        client.send(
            request_bytes(
                "/app1/up",
                "POST",
                headers=[("Expect", "100-continue"), ("Content-Length", str(len(body)))],
            )
        )
        interim = client.response()
        assert interim.status == 100
        assert client.received.startswith(b"HTTP/1.1 100 Continue\r\n")
        client.send(body)
        final = client.response()
    assert final.status == 200
    assert bytes(final.body) == str(len(body)).encode()
    assert app_handler.body == body
    assert b"\r\nExpect: 100-continue\r\n" in app_handler.head


def test_expect_100_continue_over_the_limit_gets_413_without_100(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    app = raw_app(ContinueApp())
    proxy = make_proxy({"app1": app.path}, extra='max_body_size = "1k"')
    with RawClient(proxy.port) as client:
        client.send(
            request_bytes(
                "/app1/up",
                "POST",
                headers=[("Expect", "100-continue"), ("Content-Length", "5000")],
            )
        )
        response = client.response()
    assert response.status == 413
    assert app.connections == 0


# --- streaming responses --------------------------------------------------------------------------


class TwoPartResponse:
    """Sends the head and a first part, waits for the test's gate, then the rest."""

    def __init__(self, framing: str) -> None:
        self.framing = framing
        self.gate = threading.Event()
        self.gate_opened = False

    async def __call__(self, conn: Conn) -> None:
        if await conn.request() is None:
            return
        first, second = b"first-part|", b"second-part"
        if self.framing == "content-length":
            head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (len(first) + len(second))
            parts = [first, second]
        elif self.framing == "chunked":
            head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            parts = [b"%x\r\n%s\r\n" % (len(first), first), chunked(second)]
        else:  # close-delimited
            head = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"
            parts = [first, second]
        await conn.send(head + parts[0])
        self.gate_opened = await wait_gate(self.gate)
        await conn.send(parts[1])
        if self.framing == "close-delimited":
            conn.writer.close()


@pytest.mark.parametrize("framing", ["content-length", "chunked", "close-delimited"])
def test_response_head_and_first_bytes_arrive_before_the_body_ends(
    make_proxy: ProxyFactory, raw_app: RawFactory, framing: str
) -> None:
    handler = TwoPartResponse(framing)
    app = raw_app(handler)
    proxy = make_proxy({"app1": app.path})
    with RawClient(proxy.port) as client:
        try:
            client.send(request_bytes("/app1/stream"))
            response = client.head()
            assert response.status == 200
            client.body_until(response, b"first-part|")
            assert not response.complete
        finally:
            handler.gate.set()
        client.wait(lambda: response.complete, "the end of the response")
    assert bytes(response.body) == b"first-part|second-part"
    assert handler.gate_opened


class GatedEvents:
    """An SSE app that sends event i+1 only after the test saw event i."""

    def __init__(self, count: int) -> None:
        self.gates = [threading.Event() for _ in range(count)]
        self.waited: list[bool] = []

    async def __call__(self, conn: Conn) -> None:
        if await conn.request() is None:
            return
        await conn.send(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        for i, gate in enumerate(self.gates):
            event = b"id: %d\ndata: event %d\n\n" % (i, i)
            await conn.send(b"%x\r\n%s\r\n" % (len(event), event))
            self.waited.append(await wait_gate(gate))
        await conn.send(b"0\r\n\r\n")


def test_sse_events_arrive_one_by_one(make_proxy: ProxyFactory, raw_app: RawFactory) -> None:
    handler = GatedEvents(3)
    app = raw_app(handler)
    proxy = make_proxy({"app1": app.path})
    seen: list[str] = []
    try:
        with (
            httpx.Client(timeout=DEADLINE) as client,
            client.stream("GET", f"{proxy.url}/app1/events") as response,
        ):
            assert response.headers["content-type"] == "text/event-stream"
            for line in response.iter_lines():
                if line.startswith("data: "):
                    seen.append(line)
                    # Only now does the app produce the next event.
                    handler.gates[len(seen) - 1].set()
    finally:
        for gate in handler.gates:
            gate.set()
    assert seen == ["data: event 0", "data: event 1", "data: event 2"]
    assert handler.waited == [True, True, True]


def test_sse_from_starlette_arrives_spread_out(
    make_proxy: ProxyFactory, starlette_sock: Path
) -> None:
    proxy = make_proxy({"st": starlette_sock})
    arrivals: list[float] = []
    events: list[str] = []
    with (
        httpx.Client(timeout=DEADLINE) as client,
        client.stream("GET", f"{proxy.url}/st/events?n=3&gap=0.5") as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                arrivals.append(time.monotonic())
                events.append(line)
    assert events == ['data: {"i": 0}', 'data: {"i": 1}', 'data: {"i": 2}']
    # The app waits 0.5 s between events: a buffering proxy delivers them all at once.
    assert arrivals[2] - arrivals[0] >= 0.5


def test_curl_n_shows_sse_events_as_they_come(
    make_proxy: ProxyFactory, starlette_sock: Path
) -> None:
    proxy = make_proxy({"st": starlette_sock})
    with subprocess.Popen(
        ["curl", "-sS", "-N", f"{proxy.url}/st/events?n=3&gap=0.5"],
        stdout=subprocess.PIPE,
    ) as curl:
        assert curl.stdout is not None
        first = curl.stdout.readline()
        assert first == b"id: 0\n"
        # The stream has at least a second to go: curl printed the event while it was running.
        assert curl.poll() is None
        rest = curl.stdout.read()  # until curl exits; the pytest timeout bounds it
        assert curl.wait(DEADLINE) == 0
    lines = (first + rest).decode().splitlines()
    assert [x for x in lines if x.startswith("id: ")] == ["id: 0", "id: 1", "id: 2"]
    assert [x for x in lines if x.startswith("data: ")] == [
        'data: {"i": 0}',
        'data: {"i": 1}',
        'data: {"i": 2}',
    ]


def test_big_download_is_complete_in_flat_memory(
    make_proxy: ProxyFactory, starlette_sock: Path
) -> None:
    proxy = make_proxy({"st": starlette_sock})
    assert proxy.proc is not None
    before = vm_kib(proxy.proc.pid, "VmHWM")
    size = 64 * MiB
    count = 0
    with (
        httpx.Client(timeout=30) as client,
        client.stream("GET", f"{proxy.url}/st/big?mb=64") as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-length"] == str(size)
        for chunk in response.iter_raw():
            count += len(chunk)
    assert count == size
    peak = vm_kib(proxy.proc.pid, "VmHWM")
    assert peak < 150 * 1024, f"proxy peak RSS {peak} KiB"
    assert peak - before < 32 * 1024, f"proxy peak RSS grew by {peak - before} KiB"


def test_a_long_body_held_up_by_a_slow_client_arrives_intact(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    """The built-in engine reads a long body into a buffer of its own and writes it on from
    there. While a slow client has not taken the bytes written, they still point into that
    buffer: the next read must not land in it. Every byte of this body says where it belongs."""
    total = 16 * MiB
    sender = Flood(total, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total, pattern=True)
    proxy = make_proxy({"app1": raw_app(sender).path})
    assert proxy.proc is not None
    body = bytearray()
    slow_reader_holds_the_app_back(
        proxy.port, proxy.proc.pid, sender, request_bytes("/app1/big"), body
    )
    assert len(body) == total
    assert body == offsets(0, total)


async def answer_long_bodies(conn: Conn) -> None:
    """Every request on the connection gets a 3 MiB body of `offsets`, in pieces."""
    while await conn.request() is not None:
        size = 3 * MiB
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        for start in range(0, size, 96 * 1024):
            await conn.send(offsets(start, 96 * 1024))


def test_an_app_connection_serves_again_after_a_long_body(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    """A long body is read another way than the heads (`Stream.relay`); the app connection goes
    back to the pool reading heads again: the next responses on it come through whole."""
    app = raw_app(answer_long_bodies)
    proxy = make_proxy({"app1": app.path})
    with httpx.Client(timeout=DEADLINE) as client:
        for n in range(3):
            response = client.get(f"{proxy.url}/app1/long/{n}")
            assert response.status_code == 200
            assert response.content == offsets(0, 3 * MiB)
    assert app.connections == 1


def test_slow_client_holds_the_app_back(make_proxy: ProxyFactory, raw_app: RawFactory) -> None:
    total = 64 * MiB
    sender = Flood(total, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
    proxy = make_proxy({"app1": raw_app(sender).path})
    assert proxy.proc is not None
    head = slow_reader_holds_the_app_back(
        proxy.port, proxy.proc.pid, sender, request_bytes("/app1/big")
    )
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nContent-Length: %d\r\n" % total in head + b"\r\n"
