"""The demo apps: plain ASGI 3 callables, standard library only, served by uvicorn.

`clock` serves a page with a live clock fed by Server-Sent Events and a WebSocket echo box;
`echo` answers any HTTP request with a JSON description of it. Behind sockgate each app lives
under a prefix it does not know in advance, so the clock page uses relative URLs only.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeAlias

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
ASGIApp: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]
Header: TypeAlias = tuple[bytes, bytes]

TICK = 1.0
"""Seconds between two clock events; events are sent just after each wall-clock second."""
_TICK_SLACK = 0.005
"""Wake a little after the second turns, so an event never carries the previous second."""

CLOCK_PAGE = rb"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>sockgate demo: clock</title>
<style>
:root { color-scheme: dark; --bg: #0f1419; --panel: #1a2129; --line: #30363d; --dim: #8b949e;
        --ok: #3fb950; --bad: #f85149; --accent: #58a6ff; }
* { box-sizing: border-box; }
body { margin: 0; min-height: 100vh; display: grid; place-items: center; background: var(--bg);
       color: #e6e6e6; font: 15px/1.5 system-ui, sans-serif; }
main { width: min(34rem, 92vw); display: grid; gap: 1rem; }
section { background: var(--panel); border-radius: 12px; padding: 1.2rem 1.4rem; }
h1 { margin: 0; font-size: 1rem; color: var(--dim); display: flex; justify-content: space-between; }
#clock { font: 600 3.4rem/1.2 ui-monospace, monospace; text-align: center; margin: .6rem 0 0; }
#date { text-align: center; color: var(--dim); }
.dot::before { content: "\25CF"; margin-right: .35em; color: var(--bad); }
.dot.on::before { color: var(--ok); }
form { display: flex; gap: .5rem; margin-top: .8rem; }
input { flex: 1; padding: .5rem .7rem; border: 1px solid var(--line); border-radius: 8px;
        background: var(--bg); color: inherit; font: inherit; }
button { padding: .5rem 1rem; border: 0; border-radius: 8px; background: var(--accent);
         color: #0b1220; font: inherit; font-weight: 600; cursor: pointer; }
ol { list-style: none; margin: .8rem 0 0; padding: 0; max-height: 12rem; overflow-y: auto;
     font-family: ui-monospace, monospace; }
li { padding: .15rem 0; border-top: 1px solid var(--line); }
li.sent { color: var(--dim); }
</style>
</head>
<body>
<main>
  <section>
    <h1>Server clock <span id="sse" class="dot">connecting</span></h1>
    <div id="clock">--:--:--</div>
    <div id="date">waiting for the first event</div>
  </section>
  <section>
    <h1>WebSocket echo <span id="ws" class="dot">connecting</span></h1>
    <form id="form">
      <input id="text" autocomplete="off" placeholder="Type a message" required>
      <button>Send</button>
    </form>
    <ol id="log"></ol>
  </section>
</main>
<script>
"use strict";
// Relative URLs only: this page does not know the prefix it is served under.
const byId = (id) => document.getElementById(id);
const showState = (el, on, text) => { el.classList.toggle("on", on); el.textContent = text; };

const events = new EventSource("events");
events.onopen = () => showState(byId("sse"), true, "live");
events.onerror = () => showState(byId("sse"), false, "reconnecting");
events.onmessage = (event) => {
  const now = new Date(event.data);
  byId("clock").textContent = now.toLocaleTimeString([], { hour12: false });
  byId("date").textContent = now.toLocaleDateString([], { dateStyle: "full" });
};

const wsUrl = new URL("ws", location.href);
wsUrl.protocol = location.protocol === "https:" ? "wss:" : "ws:";
let socket;
function addLine(text, kind) {
  const item = document.createElement("li");
  item.textContent = text;
  item.className = kind;
  byId("log").prepend(item);
}
function connect() {
  socket = new WebSocket(wsUrl);
  socket.onopen = () => showState(byId("ws"), true, "open");
  socket.onmessage = (event) => addLine("\u2190 " + event.data, "echo");
  socket.onclose = () => {
    showState(byId("ws"), false, "closed, retrying");
    setTimeout(connect, 2000);
  };
}
connect();
byId("form").onsubmit = (event) => {
  event.preventDefault();
  if (socket.readyState !== WebSocket.OPEN) return;
  socket.send(byId("text").value);
  addLine("\u2192 " + byId("text").value, "sent");
  byId("text").value = "";
};
</script>
</body>
</html>
"""


# --- the apps -----------------------------------------------------------------------------------


async def clock(scope: Scope, receive: Receive, send: Send) -> None:
    """`GET /`: the page; `GET /events`: one SSE event per second; `/ws`: WebSocket echo."""
    kind = scope["type"]
    if kind == "http":
        await _clock_http(scope, receive, send)
    elif kind == "websocket":
        await (_echo_socket if scope["path"] == "/ws" else _refuse_socket)(receive, send)
    elif kind == "lifespan":
        await _lifespan(receive, send)
    else:
        raise ValueError(f"unsupported ASGI scope type {kind!r}")


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    """Any method, any path: a JSON description of the request, body included."""
    kind = scope["type"]
    if kind == "http":
        body = await _read_body(receive)
        if body is not None:
            await _respond(send, 200, _describe(scope, body), "application/json")
    elif kind == "websocket":
        await _refuse_socket(receive, send)
    elif kind == "lifespan":
        await _lifespan(receive, send)
    else:
        raise ValueError(f"unsupported ASGI scope type {kind!r}")


# --- clock --------------------------------------------------------------------------------------


async def _clock_http(scope: Scope, receive: Receive, send: Send) -> None:
    path, method = scope["path"], scope["method"]
    if path == "/":
        if method not in ("GET", "HEAD"):
            await _method_not_allowed(send, "GET, HEAD")
        else:
            headers = [(b"cache-control", b"no-cache")]
            await _respond(send, 200, CLOCK_PAGE, "text/html; charset=utf-8", headers)
    elif path == "/events":
        if method != "GET":
            await _method_not_allowed(send, "GET")
        else:
            await _stream_time(receive, send)
    elif path == "/ws":
        await _respond(send, 426, b"426 Upgrade Required: this is a WebSocket endpoint\n", _TEXT)
    else:
        await _not_found(send)


async def _stream_time(receive: Receive, send: Send) -> None:
    """Send `data: <ISO time>` each second until the client disconnects."""
    headers = [
        (b"content-type", b"text/event-stream; charset=utf-8"),
        (b"cache-control", b"no-cache"),
        # nginx buffers proxied responses unless told not to; each event must go out at once.
        (b"x-accel-buffering", b"no"),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    async with asyncio.TaskGroup() as tasks:
        gone = tasks.create_task(_until_disconnect(receive))
        while not gone.done():
            stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
            event = {"type": "http.response.body", "body": f"data: {stamp}\n\n".encode()}
            try:
                await send({**event, "more_body": True})
            except OSError:  # ASGI 2.4: the server's way of saying the client has gone
                break
            await asyncio.wait([gone], timeout=TICK - time.time() % TICK + _TICK_SLACK)
        gone.cancel()


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _echo_socket(receive: Receive, send: Send) -> None:
    """Accept, then send every text or bytes message back until the client disconnects."""
    if (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message["type"] != "websocket.receive":
            continue
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})


# --- echo ---------------------------------------------------------------------------------------


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None if the client disconnected first."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _describe(scope: Scope, body: bytes) -> bytes:
    report = {
        "method": scope["method"],
        "path": scope["path"],
        "query": scope["query_string"].decode("latin-1"),
        "headers": [
            [name.decode("latin-1"), value.decode("latin-1")] for name, value in scope["headers"]
        ],
        "body": body.decode("utf-8", errors="replace"),
        "body_bytes": len(body),
    }
    return json.dumps(report).encode() + b"\n"


# --- shared -------------------------------------------------------------------------------------

_TEXT = "text/plain; charset=utf-8"


async def _respond(
    send: Send, status: int, body: bytes, content_type: str, headers: Sequence[Header] = ()
) -> None:
    head = [
        (b"content-type", content_type.encode("latin-1")),
        (b"content-length", str(len(body)).encode("latin-1")),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


async def _not_found(send: Send) -> None:
    await _respond(send, 404, b"404 Not Found\n", _TEXT)


async def _method_not_allowed(send: Send, allow: str) -> None:
    headers = [(b"allow", allow.encode("latin-1"))]
    await _respond(send, 405, b"405 Method Not Allowed\n", _TEXT, headers)


async def _refuse_socket(receive: Receive, send: Send) -> None:
    """Close before accepting: the server answers the handshake with 403."""
    if (await receive())["type"] == "websocket.connect":
        await send({"type": "websocket.close", "code": 1008})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
