"""HTTP/2 on the built-in engine's TLS listener: each stream an exchange through the same seam as
HTTP/1.1 (routing by prefix and host, pages, header policy, the access log with the protocol),
flow control both ways, Server-Sent Events unbuffered, GOAWAY on stop, and the limits against
the known HTTP/2 attacks closing only the abusive connection."""

from __future__ import annotations

import asyncio
import shutil
import signal
import ssl
import subprocess
from pathlib import Path

import h2.errors
import h2.events
import httpx
import pytest
from hyperframe.frame import ContinuationFrame, DataFrame, Frame, GoAwayFrame, HeadersFrame

from sockgate.tls import ca
from tests.support.h2client import SETTINGS, H2TestClient
from tests.support.https import curl, https_sockgate
from tests.support.proc import Proxy, run_sockgate, wait_for_line


def cafile(tmp: Path) -> Path:
    return tmp / "ca" / ca.CA_CERT


def h2_client(tmp: Path, **kwargs: object) -> httpx.AsyncClient:
    context = ssl.create_default_context(cafile=str(cafile(tmp)))
    return httpx.AsyncClient(http2=True, verify=context, timeout=30, **kwargs)  # type: ignore[arg-type]


def ws_frame(payload: bytes) -> bytes:
    """A masked text frame, as a WebSocket client sends it (RFC 6455 5.2), payload < 126."""
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return b"\x81" + bytes([0x80 | len(payload)]) + mask + masked


def test_curl_http2_at_prefix_and_host_with_the_same_rules(
    tmp: Path, https_proxy: tuple[Proxy, int]
) -> None:
    proxy, port = https_proxy
    ca_path = str(cafile(tmp))
    base = ["--http2", "--cacert", ca_path, "-w", "\n%{http_version} %{http_code}"]
    resolve = ["--resolve", f"app1.localhost:{port}:127.0.0.1"]
    for url in (f"https://localhost:{port}/app1/x?q=1", f"https://app1.localhost:{port}/x?q=1"):
        got = curl(*base, *resolve, "-H", "Cookie: a=1", "-H", "Cookie: b=2", url)
        assert got.returncode == 0, got.stderr
        body, _, status = got.stdout.rpartition("\n")
        assert status == "2 200"
        seen = httpx.Response(200, content=body).json()
        assert (seen["path"], seen["query"]) == ("/x", "q=1")
        headers = {k.lower(): v for k, v in seen["headers"]}
        assert headers["x-forwarded-proto"] == "https"
        assert headers["host"] == url.split("/")[2]
        assert headers["cookie"] == "a=1; b=2"  # one line again for HTTP/1.1
    # sockgate's own answers: the redirect to the prefix, a 404 naming the routes.
    got = curl(*base, "-o", "/dev/null", f"https://localhost:{port}/app1")
    assert got.stdout.strip() == "2 301"
    got = curl(*base, f"https://localhost:{port}/nowhere")
    assert "no app is routed at this path" in got.stdout
    assert got.stdout.endswith("2 404")
    # The access log names the protocol.
    log = proxy.config_path.parent / "work" / "logs" / "access.log"
    wait_for_line(log, '"GET /app1/x?q=1 HTTP/2.0" 200')


def test_many_streams_on_one_connection_with_bodies_both_ways(
    tmp: Path, https_proxy: tuple[Proxy, int]
) -> None:
    _, port = https_proxy
    asyncio.run(many_streams(tmp, f"https://localhost:{port}/app1"))


async def many_streams(tmp: Path, url: str) -> None:
    async with h2_client(tmp) as client:
        got = await asyncio.gather(*(client.get(f"{url}/n{i}") for i in range(50)))
        assert {r.http_version for r in got} == {"HTTP/2"}
        assert [r.json()["path"] for r in got] == [f"/n{i}" for i in range(50)]
        # Bodies larger than every window: flow control in both directions.
        up = await client.post(f"{url}/upload", content=b"u" * 5_000_000)
        assert up.text == "5000000"
        down = await client.get(f"{url}/big?mb=16")
        assert len(down.content) == 16 * 1024 * 1024
        # A body of unknown length (no content-length): chunked towards the app.

        async def parts():  # type: ignore[no-untyped-def]
            for _ in range(10):
                yield b"p" * 100_000

        up = await client.post(f"{url}/upload", content=parts())
        assert up.text == "1000000"


def test_twenty_event_streams_live_at_once_on_one_connection(
    tmp: Path, https_proxy: tuple[Proxy, int]
) -> None:
    """Over HTTP/1.1 a browser opens six connections per host and the seventh stream waits for
    one to end; over HTTP/2 twenty endless streams share one connection, all open at once, and
    each gets its events while the others stay open."""
    _, port = https_proxy
    url = f"https://localhost:{port}/app1/events?n=100000&gap=0.2"
    asyncio.run(asyncio.wait_for(twenty_streams(tmp, url), timeout=30))


async def twenty_streams(tmp: Path, url: str) -> None:
    count = 20
    seen: set[int] = set()
    everyone = asyncio.Event()
    async with h2_client(tmp) as client:

        async def live(i: int) -> None:
            async with client.stream("GET", url) as response:
                assert response.http_version == "HTTP/2"
                async for line in response.aiter_lines():
                    if line.startswith("data:"):
                        break
                seen.add(i)
                if len(seen) == count:
                    everyone.set()
                await everyone.wait()  # stays open until every stream has had an event

        await asyncio.gather(*(live(i) for i in range(count)))
    assert len(seen) == count


def test_h2load_with_zero_errors(tmp: Path, starlette_sock: Path, engine: str) -> None:
    h2load = shutil.which("h2load")
    if h2load is None:
        pytest.fail("h2load is missing: apt-get install nghttp2-client (CI installs it)")
    with https_sockgate(tmp, {"app1": starlette_sock}, engine=engine) as (_, port):
        h2load_run(h2load, port)


def h2load_run(h2load: str, port: int) -> None:
    run = subprocess.run(
        [h2load, "-n", "2000", "-c", "8", "-m", "10", f"https://localhost:{port}/app1/x"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2000 succeeded, 0 failed, 0 errored, 0 timeout" in run.stdout, run.stdout
    assert "status codes: 2000 2xx" in run.stdout


def test_stop_sends_goaway_and_lets_open_streams_finish(tmp: Path, starlette_sock: Path) -> None:
    with https_sockgate(tmp, {"app1": starlette_sock}) as (proxy, port):
        client = H2TestClient(port, cafile(tmp))
        stream = client.request("/app1/events?n=4&gap=0.4")
        client.read_until(lambda events: any(isinstance(e, h2.events.DataReceived) for e in events))
        assert proxy.proc is not None
        proxy.proc.send_signal(signal.SIGTERM)

        def stream_ended(frames: list[Frame]) -> bool:
            return any(f.stream_id == stream and "END_STREAM" in f.flags for f in frames)

        frames = client.read_frames_until(stream_ended)
        client.close()
        assert proxy.proc.wait(15) == 0
    goaways = [f for f in frames if isinstance(f, GoAwayFrame)]
    assert [(f.error_code, f.last_stream_id) for f in goaways] == [(0, stream)]
    data = b"".join(f.data for f in frames if isinstance(f, DataFrame))
    # Three more events after the first: the stream finished, it was not cut.
    assert data.count(b"data:") == 3
    assert stream_ended(frames)
    assert "connections cut" not in proxy.output()


# --- limits: each closes only the abusive connection


def assert_goaway(abuse: H2TestClient, expected: h2.errors.ErrorCodes) -> None:
    abuse.read_until(lambda _: abuse.goaway() is not None)
    goaway = abuse.goaway()
    assert goaway is not None, abuse.events[-5:]
    assert goaway.error_code == expected
    abuse.close()


def others_are_served(tmp: Path, port: int) -> None:
    other = H2TestClient(port, cafile(tmp))
    stream = other.request("/app1/ok")
    other.read_until(lambda _: other.ended(stream))
    assert b'"path":"/ok"' in other.body(stream)
    other.close()


def test_rapid_reset_flood_is_cut_off(tmp: Path, https_proxy: tuple[Proxy, int]) -> None:
    proxy, port = https_proxy
    abuse = H2TestClient(port, cafile(tmp))
    for _ in range(400):
        stream = abuse.request("/app1/slow", end=True)
        abuse.conn.reset_stream(stream)
        abuse.flush()
    assert_goaway(abuse, h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
    proxy.wait_for_output("too many streams reset")
    others_are_served(tmp, port)


def test_ping_flood_is_cut_off(tmp: Path, https_proxy: tuple[Proxy, int]) -> None:
    proxy, port = https_proxy
    abuse = H2TestClient(port, cafile(tmp))
    for i in range(500):
        abuse.conn.ping(i.to_bytes(8, "big"))
    abuse.flush()
    assert_goaway(abuse, h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
    proxy.wait_for_output("too many pings")
    others_are_served(tmp, port)


def test_settings_flood_is_cut_off(tmp: Path, https_proxy: tuple[Proxy, int]) -> None:
    proxy, port = https_proxy
    abuse = H2TestClient(port, cafile(tmp))
    for _ in range(300):
        abuse.conn.update_settings({SETTINGS.MAX_FRAME_SIZE: 16384})
    abuse.flush()
    assert_goaway(abuse, h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
    proxy.wait_for_output("too many settings frames")
    others_are_served(tmp, port)


def test_too_many_concurrent_streams_close_the_connection(
    tmp: Path, https_proxy: tuple[Proxy, int]
) -> None:
    proxy, port = https_proxy
    abuse = H2TestClient(port, cafile(tmp))
    abuse.read_until(
        lambda events: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in events)
    )
    # h2 would not open more streams than the server allows: make it believe it may.
    abuse.conn.remote_settings[SETTINGS.MAX_CONCURRENT_STREAMS] = 1000
    abuse.conn.remote_settings.acknowledge()
    for _ in range(101):
        abuse.request("/app1/upload", method="POST", end=False)  # each stays open
    assert_goaway(abuse, h2.errors.ErrorCodes.PROTOCOL_ERROR)
    proxy.wait_for_output("Max inbound streams is 100")
    others_are_served(tmp, port)


def test_oversized_header_list_is_refused(tmp: Path, https_proxy: tuple[Proxy, int]) -> None:
    proxy, port = https_proxy
    abuse = H2TestClient(port, cafile(tmp))
    stream = abuse.conn.get_next_available_stream_id()
    big = [(f"x-big-{i}", "v" * 4000) for i in range(40)]  # 160 KB, over 64 KiB
    headers = abuse.headers("/app1/x", extra=big)
    abuse.conn.send_headers(stream, headers, end_stream=True)
    abuse.flush()
    assert_goaway(abuse, h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
    assert not any(isinstance(e, h2.events.ResponseReceived) for e in abuse.events)
    proxy.wait_for_output(r"HTTP/2 client 127\.0\.0\.1: .*header")
    others_are_served(tmp, port)


def test_continuation_flood_is_cut_off(tmp: Path, https_proxy: tuple[Proxy, int]) -> None:
    """Headers that never end (CONTINUATION after CONTINUATION, CVE-2024-27316's kind)."""
    _, port = https_proxy
    abuse = H2TestClient(port, cafile(tmp))
    block = abuse.conn.encoder.encode(abuse.headers("/app1/x"))
    first = HeadersFrame(1)
    first.data = block
    frames = [first.serialize()]
    for _ in range(200):
        more = ContinuationFrame(1)
        more.data = b"\x40\x01a\x01b"  # a literal header a: b, again and again
        frames.append(more.serialize())
    abuse.sock.sendall(b"".join(frames))
    assert_goaway(abuse, h2.errors.ErrorCodes.PROTOCOL_ERROR)
    others_are_served(tmp, port)


def test_a_window_that_never_opens_ends_that_stream_alone(tmp: Path, starlette_sock: Path) -> None:
    extra = '[timeouts]\nsend = "1s"'
    with https_sockgate(tmp, {"app1": starlette_sock}, extra) as (proxy, port):
        stuck = H2TestClient(port, cafile(tmp), settings={SETTINGS.INITIAL_WINDOW_SIZE: 0})
        stream = stuck.request("/app1/big?mb=1")
        stuck.read_until(lambda _: stuck.ended(stream))
        reset = [e for e in stuck.events if isinstance(e, h2.events.StreamReset)]
        assert [e.stream_id for e in reset] == [stream]
        assert stuck.body(stream) == b""
        others_are_served(tmp, port)
        # The connection itself carries on.
        again = stuck.request("/app1/ok")
        stuck.conn.increment_flow_control_window(65535, again)
        stuck.flush()
        stuck.read_until(lambda _: stuck.ended(again))
        assert b'"path":"/ok"' in stuck.body(again)
        stuck.close()
        log = proxy.config_path.parent / "work" / "logs" / "access.log"
        wait_for_line(log, '"GET /app1/big?mb=1 HTTP/2.0" 200 ')


def test_the_status_page_and_its_live_feed_over_http2(tmp: Path, starlette_sock: Path) -> None:
    # A feed that held the stop would hold it 60 s: past the wait below, and logged as cut.
    extra = '[timeouts]\nshutdown = "60s"'
    with https_sockgate(tmp, {"app1": starlette_sock}, extra) as (proxy, port):
        client = H2TestClient(port, cafile(tmp))
        doc = client.request("/_sockgate/status.json")
        client.read_until(lambda _: client.ended(doc))
        assert b'"schema"' in client.body(doc)
        feed = client.request("/_sockgate/events")
        client.read_until(lambda _: b"data:" in client.body(feed))
        assert proxy.proc is not None
        proxy.proc.send_signal(signal.SIGTERM)
        client.read_frames_until(lambda frames: any(isinstance(f, GoAwayFrame) for f in frames))
        client.close()
        assert proxy.proc.wait(30) == 0
    assert "connections cut" not in proxy.output()


def test_websocket_over_http2_becomes_an_upgrade_to_the_app(
    tmp: Path, https_proxy: tuple[Proxy, int]
) -> None:
    """RFC 8441: CONNECT with :protocol websocket; the app gets HTTP/1.1's upgrade (with a key
    sockgate makes) and its 101 reaches the client as 200; the stream's DATA are the frames."""
    proxy, port = https_proxy
    client = H2TestClient(port, cafile(tmp))
    client.read_until(
        lambda events: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in events)
    )
    assert client.conn.remote_settings.enable_connect_protocol == 1
    stream = client.websocket("/app1/ws")
    client.read_until(lambda events: any(isinstance(e, h2.events.ResponseReceived) for e in events))
    response = next(e for e in client.events if isinstance(e, h2.events.ResponseReceived))
    assert dict(response.headers or [])[b":status"] == b"200"
    client.conn.send_data(stream, ws_frame(b"over h2"))
    client.flush()
    reply = b"echo: over h2"
    client.read_until(lambda _: reply in client.body(stream))
    assert client.body(stream) == b"\x81" + bytes([len(reply)]) + reply
    client.close()
    log = proxy.config_path.parent / "work" / "logs" / "access.log"
    wait_for_line(log, '"GET /app1/ws HTTP/2.0" 101')


def test_hpack_bomb_is_refused(tmp: Path, https_proxy: tuple[Proxy, int]) -> None:
    """A few KiB on the wire that decompress to 400 KB: one large header put in HPACK's table,
    then referred to a hundred times (a byte or two each)."""
    proxy, port = https_proxy
    abuse = H2TestClient(port, cafile(tmp))
    stream = abuse.conn.get_next_available_stream_id()
    headers = abuse.headers("/app1/x", extra=[("x-bomb", "b" * 4000)] * 100)
    abuse.conn.send_headers(stream, headers, end_stream=True)
    wire = abuse.conn.data_to_send()
    assert len(wire) < 8_000  # the bomb is small where it is sent
    abuse.sock.sendall(wire)
    assert_goaway(abuse, h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
    assert not any(isinstance(e, h2.events.ResponseReceived) for e in abuse.events)
    proxy.wait_for_output(r"HTTP/2 client 127\.0\.0\.1: .*header")
    others_are_served(tmp, port)


def test_empty_data_frame_flood_is_cut_off(tmp: Path, https_proxy: tuple[Proxy, int]) -> None:
    proxy, port = https_proxy
    abuse = H2TestClient(port, cafile(tmp))
    stream = abuse.request("/app1/upload", method="POST", end=False)
    for _ in range(500):
        abuse.conn.send_data(stream, b"")
    abuse.flush()
    assert_goaway(abuse, h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
    proxy.wait_for_output("too many empty DATA frames")
    others_are_served(tmp, port)


def test_both_directions_wait_at_once_on_one_stream(
    tmp: Path, https_proxy: tuple[Proxy, int]
) -> None:
    """The reply waits for the client's window while the next message is awaited from it:
    either wait must wake for its own cause (a WebSocket over HTTP/2, window 4 bytes)."""
    _, port = https_proxy
    client = H2TestClient(port, cafile(tmp), settings={SETTINGS.INITIAL_WINDOW_SIZE: 4})
    stream = client.websocket("/app1/ws")
    client.conn.send_data(stream, ws_frame(b"one"))
    client.flush()
    client.read_until(lambda _: len(client.body(stream)) >= 4)  # the reply, held at 4 bytes
    client.conn.send_data(stream, ws_frame(b"two"))  # while the server waits for the window
    client.flush()
    client.conn.increment_flow_control_window(1 << 20, stream)
    client.conn.increment_flow_control_window(1 << 20)
    client.flush()
    replies = b"\x81\x09echo: one\x81\x09echo: two"
    client.read_until(lambda _: client.body(stream) == replies)
    client.close()


def test_streams_past_the_shutdown_deadline_are_cut_and_logged(
    tmp: Path, starlette_sock: Path
) -> None:
    extra = '[timeouts]\nshutdown = "1s"'
    with https_sockgate(tmp, {"app1": starlette_sock}, extra) as (proxy, port):
        client = H2TestClient(port, cafile(tmp))
        stream = client.request("/app1/events?n=1000&gap=0.2")
        client.read_until(lambda _: b"data:" in client.body(stream))
        assert proxy.proc is not None
        proxy.proc.send_signal(signal.SIGTERM)
        assert proxy.proc.wait(15) == 0
        client.close()
        proxy.wait_for_output("1 connections cut at the shutdown deadline")
    log = proxy.config_path.parent / "work" / "logs" / "access.log"
    wait_for_line(log, '"GET /app1/events?n=1000&gap=0.2 HTTP/2.0" 200')


def test_reload_sends_goaway_and_open_streams_finish(tmp: Path, starlette_sock: Path) -> None:
    with https_sockgate(tmp, {"app1": starlette_sock}) as (proxy, port):
        client = H2TestClient(port, cafile(tmp))
        stream = client.request("/app1/events?n=4&gap=0.4")
        client.read_until(lambda _: b"data:" in client.body(stream))
        reload = run_sockgate("reload", "-c", str(proxy.config_path), cwd=tmp)
        assert reload.returncode == 0, reload.stdout + reload.stderr

        def stream_ended(frames: list[Frame]) -> bool:
            return any(f.stream_id == stream and "END_STREAM" in f.flags for f in frames)

        frames = client.read_frames_until(stream_ended)
        client.close()
        goaways = [f for f in frames if isinstance(f, GoAwayFrame)]
        assert [(f.error_code, f.last_stream_id) for f in goaways] == [(0, stream)]
        data = b"".join(f.data for f in frames if isinstance(f, DataFrame))
        assert data.count(b"data:") == 3  # the rest of the stream, not cut
        others_are_served(tmp, port)  # a new connection, on the new config
