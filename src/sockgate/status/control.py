"""The control channel: a Unix socket in `workdir` (mode 0600, so only the user who runs
sockgate may use it; no TCP port anywhere) that `sockgate status` and `sockgate stop` talk to.

It speaks HTTP/1.1, one request per connection, read by the proxy's own parser (`http.parse`):

    GET  /status.json   the status document (as the status page's status.json)
    POST /reload        read the config again (as SIGHUP); the answer says what changed, or why
                        the reload was refused (409; the running config stays)
    POST /stop          a graceful stop, as SIGTERM; the answer's body ends when sockgate has
                        stopped (its connection closes last), so `sockgate stop` can wait for it

With `workers = N` worker 0 owns the socket: its status counts are its own (the document says
so), and its stop stops the supervisor, which stops every worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..apps import children
from ..config import MAX_SOCKET_PATH
from ..config.reconfig import ReloadResult
from ..engine.stream import Stream
from ..errors import SockgateError
from ..http.events import Data, RequestHead, ResponseHead
from ..http.parse import RequestParser, ResponseParser
from ..http.serialise import request_head, response_head
from . import dashboard

log = logging.getLogger(__name__)

HEAD_DEADLINE = 10.0  # a client must send its request within this


@dataclass(frozen=True, slots=True)
class Actions:
    """What the endpoints may do to the running engine."""

    status: Callable[[], Awaitable[dict[str, Any]]]
    stop: Callable[[], None]
    reload: Callable[[], ReloadResult]


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    content_type: bytes = b"text/plain; charset=utf-8"
    # The connection stays open after the body until the process has stopped (POST /stop).
    held: bool = False


async def _status(actions: Actions) -> Reply:
    return Reply(200, dashboard.dumps(await actions.status()), b"application/json")


async def _reload(actions: Actions) -> Reply:
    result = actions.reload()
    return Reply(200 if result.ok else 409, dashboard.dumps(result.as_dict()), b"application/json")


async def _stop(actions: Actions) -> Reply:
    actions.stop()
    return Reply(202, b"stopping\n", held=True)


Endpoint = Callable[[Actions], Awaitable[Reply]]
# (method, path) -> endpoint
ENDPOINTS: dict[tuple[bytes, bytes], Endpoint] = {
    (b"GET", b"/status.json"): _status,
    (b"POST", b"/reload"): _reload,
    (b"POST", b"/stop"): _stop,
}
_REASONS = {
    200: b"OK",
    202: b"Accepted",
    400: b"Bad Request",
    404: b"Not Found",
    409: b"Conflict",
}


class ControlServer:
    """Listens on `path` while the engine runs; `close()` removes the socket file (if it is
    still ours) and ends held connections."""

    def __init__(self, path: Path, actions: Actions) -> None:
        self.path = path
        self.actions = actions
        self._server: asyncio.AbstractServer | None = None
        self._inode: int | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._held: list[Stream] = []

    def __repr__(self) -> str:
        return f"<ControlServer {self.path} connections={len(self._tasks)}>"

    async def start(self) -> None:
        sock = bind(self.path)
        self._inode = os.stat(self.path).st_ino
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(lambda: Stream(self._accepted), sock=sock)

    def _accepted(self, stream: Stream) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(stream))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, stream: Stream) -> None:
        held = False
        try:
            reply = await self._answer(stream)
            head = response_head(
                reply.status,
                _REASONS.get(reply.status, b"Error"),
                [(b"Content-Type", reply.content_type), (b"Connection", b"close")]
                + ([] if reply.held else [(b"Content-Length", b"%d" % len(reply.body))]),
            )
            stream.write(head + reply.body)
            held = reply.held
            if held:
                self._held.append(stream)
        except (ConnectionError, TimeoutError) as exc:
            log.debug("control connection ended: %s", exc)
        finally:
            if not held:
                stream.close()

    async def _answer(self, stream: Stream) -> Reply:
        parser = RequestParser()
        deadline = asyncio.get_running_loop().time() + HEAD_DEADLINE
        while not parser.events:
            data = await stream.read(deadline)
            if not data:
                raise ConnectionResetError("closed before a request")
            parser.feed(data)
        head = parser.events.popleft()
        if not isinstance(head, RequestHead):
            return Reply(400, b"not a valid request\n")
        path = head.target.partition(b"?")[0]
        endpoint = ENDPOINTS.get((head.method, path))
        if endpoint is None:
            known = ", ".join(f"{m.decode()} {p.decode()}" for m, p in ENDPOINTS)
            return Reply(404, f"no such control endpoint; known: {known}\n".encode())
        return await endpoint(self.actions)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in self._tasks:
            task.cancel()
        for stream in self._held:
            stream.close()
        self._held.clear()
        with contextlib.suppress(OSError):
            if self._inode is not None and os.stat(self.path).st_ino == self._inode:
                self.path.unlink()


def bind(path: Path) -> socket.socket:
    """A listening socket at `path`, mode 0600 from the start. A socket file nobody answers on
    (left by a killed sockgate) is replaced; one that answers means sockgate runs here."""
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise SockgateError(
            f"{path}: the control socket's path is over the kernel's {MAX_SOCKET_PATH}-byte "
            "limit for Unix sockets: use a shorter workdir"
        )
    if children.accepts(path):
        raise SockgateError(
            f"{path}: another sockgate answers on this control socket; stop it first "
            "(`sockgate stop`) or use another workdir"
        )
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    mask = os.umask(0o177)  # no window in which the socket is open to others
    try:
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        raise SockgateError(f"{path}: cannot create the control socket: {exc.strerror}") from None
    finally:
        os.umask(mask)
    os.chmod(path, 0o600)
    sock.listen(16)
    sock.setblocking(False)
    return sock


# --- the client side (sockgate status, sockgate stop) -----------------------------------------


class NotRunning(SockgateError):
    """Nothing answers on the control socket."""


def call(path: Path, method: str, target: str, timeout: float) -> tuple[int, bytes]:
    """One request on the control socket: the status and the whole body (read to the close)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise NotRunning(
                f"sockgate is not running in {path.parent} (nothing answers on {path})"
            ) from None
        except PermissionError:
            raise SockgateError(
                f"{path}: permission denied: the control socket belongs to the user who runs "
                "that sockgate (mode 0600)"
            ) from None
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG or "too long" in str(exc):
                raise NotRunning(f"{path}: path too long for a Unix socket") from None
            raise SockgateError(f"{path}: {exc.strerror or exc}") from None
        request = request_head(
            method.encode(),
            target.encode(),
            [(b"Host", b"sockgate"), (b"Content-Length", b"0"), (b"Connection", b"close")],
        )
        sock.sendall(request)
        received = bytearray()
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            raise SockgateError(f"{path}: no complete answer within {timeout:g}s") from None
    return _parse(path, bytes(received))


def _parse(path: Path, data: bytes) -> tuple[int, bytes]:
    parser = ResponseParser()
    parser.feed(data)  # close-delimited bodies have their Data events without an end
    status, body = 0, bytearray()
    for event in parser.events:
        if isinstance(event, ResponseHead):
            status = event.status
        elif isinstance(event, Data):
            body += event.data
    if not status:
        raise SockgateError(f"{path}: the answer is not HTTP")
    return status, bytes(body)


def status(path: Path, timeout: float = 10.0) -> dict[str, Any]:
    code, body = call(path, "GET", "/status.json", timeout)
    if code != 200:
        raise SockgateError(f"{path}: status failed ({code}): {body.decode(errors='replace')}")
    doc: dict[str, Any] = json.loads(body)
    return doc


def reload(path: Path, timeout: float = 30.0) -> dict[str, Any]:
    """Ask for a reload; the outcome (ok, message, changes), whether applied or refused."""
    code, body = call(path, "POST", "/reload", timeout)
    if code not in (200, 409):
        raise SockgateError(f"{path}: reload failed ({code}): {body.decode(errors='replace')}")
    result: dict[str, Any] = json.loads(body)
    return result


def stop(path: Path, timeout: float) -> None:
    """Ask for a graceful stop and wait until sockgate has stopped (or `timeout` passed)."""
    code, body = call(path, "POST", "/stop", timeout)
    if code != 202:
        raise SockgateError(f"{path}: stop failed ({code}): {body.decode(errors='replace')}")
