"""An exchange's behaviour, in process: in-memory client and app sides (tests/support/fakes.py),
real HTTP parsing, no socket and no child process. The same behaviours have end-to-end tests on
real processes (test_proxy_*.py); these pin down the exchange itself, fast."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from sockgate import errors
from sockgate.config import App, Timeouts
from sockgate.engine.upstream import Upstream
from sockgate.exchange import phase
from sockgate.exchange.forward import Exchange
from sockgate.http.routing import Forward, Misdirected, Redirect
from tests.support.fakes import FakeApp, FakeClient, FakePool, engine_for, exchange

GET = b"GET /a/page HTTP/1.1\r\nHost: localhost\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"


@pytest.fixture
def app(tmp: Path) -> App:
    return App(name="a", socket=tmp / "a.sock", prefix="/a/")


def run(ex: Exchange) -> bool | None:
    result = asyncio.run(asyncio.wait_for(ex.run(), 10))
    assert phase.ended(ex.phase), phase.name(ex.phase)  # every exchange ends, one way of three
    return result


def test_a_whole_response_reaches_the_client_and_the_app_connection_goes_back(
    tmp: Path, app: App
) -> None:
    client, conn = FakeClient(GET), FakeApp(OK)
    ex = exchange(engine_for(tmp, app), client, FakePool(app, conn))
    assert run(ex) is True
    assert ex.phase == phase.COMPLETE
    assert client.response is not None
    assert client.response.status == 200
    assert bytes(client.received) == b"hi"
    assert client.ended
    assert conn.got.startswith(b"GET /page HTTP/1.1\r\n")  # the prefix stripped
    assert conn.released
    assert ex.status == 200
    assert ex.sent == 2


def test_the_decision_travels_with_the_exchange(tmp: Path, app: App) -> None:
    engine = engine_for(tmp, app)
    ex = exchange(engine, FakeClient(GET))
    assert isinstance(ex.decision, Forward)
    assert ex.app is app
    assert ex.upstream is engine.upstreams["a"]  # looked up once, with the decision
    assert ex.phase == phase.ROUTED
    redirect = exchange(engine, FakeClient(b"GET /a HTTP/1.1\r\nHost: localhost\r\n\r\n"))
    assert isinstance(redirect.decision, Redirect)
    foreign = exchange(engine, FakeClient(b"GET /a/ HTTP/1.1\r\nHost: evil.example\r\n\r\n"))
    assert isinstance(foreign.decision, Misdirected)
    assert foreign.upstream is None


def test_a_foreign_host_is_answered_421_and_never_reaches_the_app(tmp: Path, app: App) -> None:
    client = FakeClient(b"GET /a/ HTTP/1.1\r\nHost: evil.example\r\n\r\n")
    pool = FakePool(app)  # no connection to give: asking for one fails the test
    ex = exchange(engine_for(tmp, app), client, pool)
    assert run(ex) is True
    assert ex.phase == phase.ANSWERED
    assert [p.status for p in client.pages] == [421]
    assert pool.asked == []


def test_an_early_answer_ends_the_exchange_and_the_connection_is_not_reused(
    tmp: Path, app: App
) -> None:
    """The app answers before the request body is through (a 413, say): the client gets the
    answer, and neither connection carries another exchange (the rest of the body cannot be
    told from what would follow)."""
    request = b"POST /a/up HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\n12345"
    early = b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 3\r\n\r\nno!"
    client, conn = FakeClient(request), FakeApp(early)
    ex = exchange(engine_for(tmp, app), client, FakePool(app, conn))
    assert run(ex) is False
    assert ex.phase == phase.COMPLETE
    assert client.response is not None
    assert client.response.status == 413
    assert bytes(client.received) == b"no!"
    assert not ex.body_done
    assert conn.closed
    assert not conn.released


def test_a_reused_connection_closed_unread_is_retried_on_a_new_one(tmp: Path, app: App) -> None:
    stale, fresh = FakeApp(None, reused=True), FakeApp(OK)
    client = FakeClient(GET)
    pool = FakePool(app, stale, fresh)
    ex = exchange(engine_for(tmp, app), client, pool)
    assert run(ex) is True
    assert pool.asked == [{"retryable": True, "fresh": False}, {"retryable": True, "fresh": True}]
    assert stale.got.startswith(b"GET /page ")  # it went out once, unread: sent again
    assert fresh.got == stale.got
    assert client.response is not None
    assert client.response.status == 200
    assert ex.phase == phase.COMPLETE


def test_a_request_with_a_body_is_not_sent_twice(tmp: Path, app: App) -> None:
    request = b"POST /a/up HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\nhi"
    stale = FakeApp(None, reused=True)
    client = FakeClient(request)
    pool = FakePool(app, stale, FakeApp(OK))
    ex = exchange(engine_for(tmp, app), client, pool)
    assert run(ex) is False
    assert len(pool.asked) == 1
    assert [p.status for p in client.pages] == [502]
    assert "closed the connection" in client.pages[0].title
    assert ex.phase == phase.ANSWERED


def test_a_write_to_a_closed_reused_connection_goes_again_on_a_new_one(tmp: Path, app: App) -> None:
    stale, fresh = FakeApp(reused=True, send_fails=True), FakeApp(OK)
    client = FakeClient(GET)
    pool = FakePool(app, stale, fresh)
    ex = exchange(engine_for(tmp, app), client, pool)
    assert run(ex) is True
    assert stale.closed
    assert fresh.got.startswith(b"GET /page ")
    assert [a["fresh"] for a in pool.asked] == [False, True]


def test_interim_responses_pass_before_the_final_one(tmp: Path, app: App) -> None:
    steps = (
        b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n",
    )
    client, conn = FakeClient(GET), FakeApp(*steps, OK)
    ex = exchange(engine_for(tmp, app), client, FakePool(app, conn))
    assert run(ex) is True
    assert client.interims == [103, 100]
    assert client.response is not None
    assert client.response.status == 200


UPGRADE = (
    b"GET /a/ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
)


def test_an_upgrade_becomes_a_tunnel(tmp: Path, app: App) -> None:
    switching = (
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    )
    client, conn = FakeClient(UPGRADE), FakeApp(switching)
    engine = engine_for(tmp, app)
    ex = exchange(engine, client, FakePool(app, conn))
    assert run(ex) is False  # the tunnel ends the connection
    assert [t.status for t in client.tunnels] == [101]
    assert ex.phase == phase.COMPLETE
    assert ex.status == 101
    assert conn.closed
    assert engine.stats.app("a").upgrades == 0  # counted while it lasted, not after


def test_a_101_without_a_protocol_is_a_bad_response(tmp: Path, app: App) -> None:
    client, conn = FakeClient(UPGRADE), FakeApp(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
    ex = exchange(engine_for(tmp, app), client, FakePool(app, conn))
    run(ex)
    assert client.tunnels == []
    assert [p.status for p in client.pages] == [502]
    assert "no Upgrade header" in client.pages[0].detail


def test_a_101_to_a_plain_request_is_a_bad_response(tmp: Path, app: App) -> None:
    switching = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n"
    client, conn = FakeClient(GET), FakeApp(switching)
    ex = exchange(engine_for(tmp, app), client, FakePool(app, conn))
    run(ex)
    assert [p.status for p in client.pages] == [502]
    assert ex.phase == phase.ANSWERED


def test_a_body_cut_short_cuts_the_client_connection_never_a_page(tmp: Path, app: App) -> None:
    """Once the head went out, a failure can only be shown by not finishing: an aborted
    connection, not an error page glued to half a response."""
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
    client, conn = FakeClient(GET), FakeApp(head + b"1234", None)
    ex = exchange(engine_for(tmp, app), client, FakePool(app, conn))
    assert run(ex) is False
    assert ex.phase == phase.CUT
    assert client.aborted
    assert client.pages == []
    assert bytes(client.received) == b"1234"
    assert not client.ended
    assert ex.fault is not None
    assert "incomplete" in ex.fault


def test_an_app_that_closes_mid_head_gets_a_page(tmp: Path, app: App) -> None:
    client, conn = FakeClient(GET), FakeApp(b"HTTP/1.1 200 OK\r\nContent-Le", None)
    ex = exchange(engine_for(tmp, app), client, FakePool(app, conn))
    assert run(ex) is False
    assert ex.phase == phase.ANSWERED
    assert [p.status for p in client.pages] == [502]
    assert "middle of the head" in client.pages[0].detail


def test_a_silent_app_gets_a_504_before_its_head(tmp: Path, app: App) -> None:
    client, conn = FakeClient(GET, timeouts=Timeouts(read=0.05)), FakeApp()
    ex = exchange(engine_for(tmp, app), client, FakePool(app, conn))
    run(ex)
    assert [p.status for p in client.pages] == [504]
    assert conn.closed


def test_a_client_that_leaves_is_no_fault_of_the_app(tmp: Path, app: App) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"
    client, conn = FakeClient(GET), FakeApp(head, b"data: 1\n\n")
    engine = engine_for(tmp, app)
    ex = exchange(engine, client, FakePool(app, conn))

    async def leave_when_the_app_is_silent() -> bool | None:
        task = asyncio.create_task(ex.run())
        await conn.finished.wait()
        assert engine.stats.app("a").sse == 1
        client.leave()
        return await task

    asyncio.run(asyncio.wait_for(leave_when_the_app_is_silent(), 10))
    assert ex.phase == phase.CUT
    assert bytes(client.received) == b"data: 1\n\n"
    assert ex.fault is None  # the client's doing: no fault of the app's to show
    assert engine.stats.app("a").sse == 0


def test_no_connection_to_the_app_is_a_page_naming_the_fault(tmp: Path, app: App) -> None:
    client = FakeClient(GET)
    missing = errors.SocketMissing("a", str(app.socket), "no such file")
    ex = exchange(engine_for(tmp, app), client, FakePool(app, missing))
    assert run(ex) is False
    assert ex.phase == phase.ANSWERED
    assert len(client.pages) == 1
    assert client.pages[0].app == "a"
    assert ex.fault is not None


@pytest.fixture
def holding(caplog: pytest.LogCaptureFixture) -> Iterator[asyncio.Event]:
    """Set when the pool says it holds requests for an app whose socket is missing."""
    seen = asyncio.Event()

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "holding requests" in record.getMessage():
                seen.set()

    handler = Handler()
    logging.getLogger("sockgate.engine.upstream").addHandler(handler)
    caplog.set_level(logging.INFO, logger="sockgate.engine.upstream")
    yield seen
    logging.getLogger("sockgate.engine.upstream").removeHandler(handler)


def test_a_request_is_held_until_a_restarting_app_is_back(
    tmp: Path, app: App, holding: asyncio.Event
) -> None:
    """The real pool: the app's socket is missing when the request comes, and appears while
    the request is held."""
    client = FakeClient(GET)
    engine = engine_for(tmp, app)
    ex = exchange(engine, client)
    assert isinstance(ex.upstream, Upstream)
    ex.upstream.answered = True  # it answered before: a missing socket is a restart

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(OK)
        await writer.drain()
        writer.close()

    async def scenario() -> bool | None:
        task = asyncio.create_task(ex.run())
        await holding.wait()  # the first connect found no socket
        server = await asyncio.start_unix_server(answer, path=str(app.socket))
        async with server:
            keep = await task
        engine.close()  # the app connection went back to the pool: close it in the loop
        return keep

    keep = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert keep is True
    assert client.response is not None
    assert client.response.status == 200
    assert bytes(client.received) == b"hi"


def test_a_hold_that_runs_out_names_the_missing_socket(tmp: Path) -> None:
    app = App(name="a", socket=tmp / "a.sock", prefix="/a/", hold=0.1)
    client = FakeClient(GET)
    engine = engine_for(tmp, app)
    ex = exchange(engine, client)
    assert isinstance(ex.upstream, Upstream)
    ex.upstream.answered = True
    assert run(ex) is False
    assert ex.phase == phase.ANSWERED
    assert [p.status for p in client.pages] == [502]
    assert "missing" in client.pages[0].title


def test_an_app_that_never_answered_is_not_held(
    tmp: Path, app: App, holding: asyncio.Event
) -> None:
    """Its socket may be a typo: answered at once, though its `hold` is 5 s."""
    client = FakeClient(GET)
    ex = exchange(engine_for(tmp, app), client)
    assert isinstance(ex.upstream, Upstream)
    assert not ex.upstream.answered
    assert asyncio.run(asyncio.wait_for(ex.run(), app.hold / 2)) is False
    assert not holding.is_set()
    assert [p.status for p in client.pages] == [502]


def test_an_exchange_shows_its_request_and_phase(tmp: Path, app: App) -> None:
    ex = exchange(engine_for(tmp, app), FakeClient(GET))
    assert repr(ex) == "<Exchange b'GET /a/page HTTP/1.1' ROUTED>"
