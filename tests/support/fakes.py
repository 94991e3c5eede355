"""In-memory sides for an exchange (`sockgate.exchange.sides`): a client, an app connection and
a pool, with no socket and no process. The HTTP is real: requests and responses are bytes fed
to sockgate's own parsers, so the events an exchange sees are those a real peer would cause."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from sockgate import errors
from sockgate.config import App, Config, Listen, Timeouts
from sockgate.engine.shared import Engine
from sockgate.exchange.forward import Exchange, decide
from sockgate.exchange.phase import RESPONDING, move
from sockgate.http import pages
from sockgate.http.events import Event, RequestHead, ResponseHead
from sockgate.http.headers import REQUEST_WATCH, RESPONSE_WATCH
from sockgate.http.parse import RequestParser, ResponseParser

# An app's reply, step by step: bytes it sends, None for closing its end, or an exception the
# connection raises (a reset). Each step is taken when the exchange waits for the next event.
Step = bytes | None | BaseException


class FakeApp:
    """One app connection: what the exchange sent it is kept, its replies are scripted."""

    def __init__(self, *steps: Step, reused: bool = False, send_fails: bool = False) -> None:
        self.parser = ResponseParser(watch=RESPONSE_WATCH)
        self.steps: deque[Step] = deque(steps)
        self.reused = reused
        self.received = 0
        self.cut_off = False
        self.send_fails = send_fails  # the app's end is closed: a write raises
        self.got = bytearray()
        self.closed = False
        self.released = False
        self.finished = asyncio.Event()  # set when the script has run out
        self._closing = asyncio.Event()

    def __repr__(self) -> str:
        return f"<FakeApp reused={self.reused} closed={self.closed} released={self.released}>"

    @property
    def active(self) -> bool:
        return not (self.closed or self.released)

    async def next_event(self, deadline: float | None = None) -> Event | None:
        while not self.parser.events:
            if self.closed:
                return None
            if not self.steps:  # silent from here on: until the deadline, or closed
                self.finished.set()
                async with asyncio.timeout_at(deadline):
                    await self._closing.wait()
                return None
            step = self.steps.popleft()
            if step is None:
                return None
            if isinstance(step, BaseException):
                raise step
            self.received += len(step)
            self.parser.feed(step)
        return self.parser.events.popleft()

    def send(self, data: bytes) -> None:
        if self.send_fails or self.closed:
            raise BrokenPipeError("the app's end is closed")
        self.got += data

    def send_parts(self, parts: list[bytes]) -> None:
        for part in parts:
            self.send(part)

    async def drain(self, deadline: float) -> None:
        await asyncio.sleep(0)

    def release(self) -> None:
        self.released = True

    def close(self) -> None:
        self.closed = True
        self._closing.set()


class FakePool:
    """An app's pool: hands out the given connections in order, or raises the given faults."""

    def __init__(self, app: App, *conns: FakeApp | errors.UpstreamError) -> None:
        self.app = app
        self.conns: deque[FakeApp | errors.UpstreamError] = deque(conns)
        self.asked: list[dict[str, bool]] = []

    async def acquire(self, *, retryable: bool, fresh: bool = False) -> FakeApp:
        self.asked.append({"retryable": retryable, "fresh": fresh})
        conn = self.conns.popleft()
        if isinstance(conn, errors.UpstreamError):
            raise conn
        return conn


@dataclass
class FakeClient:
    """A client that sent `request` (bytes: its head and whatever of its body arrived) and
    then waits; what the exchange answers is kept as it was handed over."""

    request: bytes
    timeouts: Timeouts = field(default_factory=Timeouts)
    client_ip: str = "127.0.0.1"
    scheme: bytes = b"http"
    closing: bool = False
    parser: RequestParser = field(init=False)
    head: RequestHead = field(init=False)
    interims: list[int] = field(default_factory=list)
    response: ResponseHead | None = None
    received: bytearray = field(default_factory=bytearray)  # what the client got of the body
    pending: list[bytes] = field(default_factory=list)
    ended: bool = False
    pages: list[pages.Page] = field(default_factory=list)
    aborted: bool = False
    tunnels: list[ResponseHead] = field(default_factory=list)
    watched: Exchange | None = None

    def __post_init__(self) -> None:
        self.parser = RequestParser(watch=REQUEST_WATCH)
        self.parser.feed(self.request)
        head = self.parser.events.popleft()
        assert isinstance(head, RequestHead), head
        self.head = head

    def clock(self) -> float:
        return asyncio.get_running_loop().time()

    async def next_body_event(self, deadline: float) -> Event | None:
        if not self.parser.events:  # nothing more arrives: until the deadline
            await asyncio.sleep(max(0.0, deadline - self.clock()))
            raise TimeoutError
        return self.parser.events.popleft()

    def queued_error(self) -> errors.ClientError | None:
        return None

    def skip_end_of_request(self) -> None:
        self.parser.events.popleft()

    def watch_client(self, ex: Exchange | None) -> None:
        self.watched = ex

    def leave(self) -> None:
        """The client closes its connection while the app works on its request."""
        ex = self.watched
        assert ex is not None, "no exchange is under way"
        ex.client_left = True
        if ex.conn is not None:
            ex.conn.close()

    def interim(self, ex: Exchange, response: ResponseHead) -> None:
        self.interims.append(response.status)

    def begin(self, ex: Exchange, response: ResponseHead) -> None:
        ex.status = response.status
        ex.keep = True
        self.pending.append(b"")  # the head: goes out with the first flush
        self.response = response

    def body(self, ex: Exchange, data: bytes) -> None:
        self.pending.append(data)

    def end(self, ex: Exchange) -> None:
        self.ended = True

    async def flush(self, ex: Exchange) -> None:
        if self.pending:
            self.received += b"".join(self.pending)
            self.pending.clear()
            if ex.phase != RESPONDING:
                ex.phase = move(ex.phase, RESPONDING)
        await asyncio.sleep(0)

    def answer(self, ex: Exchange, page: pages.Page) -> bool:
        ex.status = page.status
        self.pages.append(page)
        return True

    def page(self, ex: Exchange, page: pages.Page) -> None:
        self.pages.append(page)

    def abort(self) -> None:
        self.aborted = True

    async def tunnel(self, ex: Exchange, conn: object, response: ResponseHead) -> None:
        self.tunnels.append(response)

    def continue_in_callbacks(self, ex: Exchange) -> bool:
        return False  # no callbacks here: the task drives the whole exchange

    async def status_page(self, ex: Exchange) -> bool:
        raise AssertionError("no status page in these tests")


def engine_for(tmp: Path, *apps: App, timeouts: Timeouts | None = None) -> Engine:
    config = Config(
        source=None,
        listen=Listen("127.0.0.1", 8080),
        workdir=tmp,
        timeouts=timeouts or Timeouts(),
        apps=apps,
    )
    return Engine(config)


def exchange(engine: Engine, client: FakeClient, pool: FakePool | None = None) -> Exchange:
    """The client's request, decided by the engine; its pool replaced by `pool`."""
    ex = Exchange(client.head, decide(engine, client.head), client, engine)  # type: ignore[arg-type]
    if pool is not None:
        ex.upstream = pool  # type: ignore[assignment]
    return ex
