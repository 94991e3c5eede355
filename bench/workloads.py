"""The plain-HTTP workloads: wrk runs, a curl download, a WebSocket echo client, an SSE latency
client and 1,000 idle keep-alive connections. Each returns a Sample: metric values plus raw
details. The TLS ones are in tls.py; catalog.py lists them all with their figures."""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends import TINY_BODY
from procs import BenchError, tree_cpu_seconds, tree_mb
from proxies import Target
from websockets.asyncio.client import connect as ws_connect

WRK_TIMEOUT = "5s"
IO_TIMEOUT = 10.0
# "At rest": this long with no connection open before RSS is read. A proxy may give memory
# back once the load is over (sockgate closes its idle app connections and trims its heap
# a second after the last connection closes); nginx and HAProxy hold theirs at once.
REST = 2.0
WS_MESSAGE = b"x" * 64
WS_WARMUP = 50
SSE_SKIP = 3
"""SSE events not counted: the first ones ride on a fresh connection and a cold path."""


@dataclass(frozen=True)
class Settings:
    rounds: int
    duration: int
    warmup: int
    wrk_threads: int
    downloads: int
    ws_messages: int
    sse_events: int
    sse_interval_ms: float
    idle_conns: int


@dataclass(frozen=True)
class Metric:
    key: str
    title: str
    unit: str
    higher_is_better: bool
    proxy_only: bool = False
    """Measured on the proxy's processes: there is no such figure for `direct`."""
    tls: bool = False
    """Measured over HTTPS: n/a for the rows that do not serve it."""


@dataclass
class Sample:
    metrics: dict[str, float] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)


# wrk ---------------------------------------------------------------------------------------

DONE_LUA = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d, ' ..
    '"write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


def browser_headers(total: int = 800) -> dict[str, str]:
    """Headers a desktop browser sends for a page, the cookie padded so that all header lines
    (`Name: value` + CRLF) add up to `total` bytes."""
    headers = {
        "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Safari/537.36",
        "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
        "image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7",
        "Accept-Language": "en-US,en;q=0.9,de;q=0.8",
        "Accept-Encoding": "gzip, deflate, br, zstd",
        "Referer": "http://localhost:8080/b/",
        "sec-ch-ua": '"Google Chrome";v="131", "Chromium";v="131", "Not_A Brand";v="24"',
        "sec-ch-ua-mobile": "?0",
        "sec-ch-ua-platform": '"Linux"',
        "Upgrade-Insecure-Requests": "1",
        "Sec-Fetch-Site": "same-origin",
        "Sec-Fetch-Mode": "navigate",
        "Sec-Fetch-User": "?1",
        "Sec-Fetch-Dest": "document",
        "Cache-Control": "max-age=0",
        "Cookie": "_xsrf=2|6c1e9f0a|5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a|1732752000; session=",
    }
    used = sum(len(k) + len(v) + 4 for k, v in headers.items())
    headers["Cookie"] += ("a1b2c3d4e5f6" * 100)[: max(total - used, 0)]
    return headers


def write_lua_scripts(directory: Path) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    plain = directory / "done.lua"
    plain.write_text(DONE_LUA, encoding="utf-8")
    # JSON string escapes are valid Lua string escapes for ASCII text.
    sets = "".join(
        f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}\n" for k, v in browser_headers().items()
    )
    headers = directory / "headers.lua"
    headers.write_text(sets + DONE_LUA, encoding="utf-8")
    return {"plain": plain, "headers": headers}


def run_wrk(
    url: str, conns: int, settings: Settings, script: Path, extra: tuple[str, ...] = ()
) -> dict[str, Any]:
    threads = max(1, min(settings.wrk_threads, conns))
    args = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{settings.duration}s"]
    args += ["--timeout", WRK_TIMEOUT, "-s", str(script), *extra, url]
    done = subprocess.run(
        args, capture_output=True, text=True, timeout=settings.duration + 60, check=False
    )
    for line in done.stdout.splitlines():
        if line.startswith("BENCH "):
            result: dict[str, Any] = json.loads(line[len("BENCH ") :])
            break
    else:
        raise BenchError(f"wrk printed no summary (exit {done.returncode}): {done.stderr.strip()}")
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["errors"] = sum(result[k] for k in ("connect", "read", "write", "status", "timeout"))
    return result


def wrk_sample(
    metric: str,
    target: Target,
    settings: Settings,
    url: str,
    conns: int,
    script: Path,
    extra: tuple[str, ...] = (),
) -> Sample:
    pid = target.measured_pid
    cpu_before = tree_cpu_seconds(pid) if pid is not None else 0.0
    result = run_wrk(url, conns, settings, script, extra)
    if pid is not None:
        result["proxy_cpu_s"] = tree_cpu_seconds(pid) - cpu_before
    sample = Sample({metric: result["rps"]}, result)
    if result["errors"]:
        sample.detail["warning"] = f"{result['errors']} wrk errors"
    return sample


def tiny_ka32(target: Target, settings: Settings, scripts: dict[str, Path]) -> Sample:
    sample = wrk_sample("tiny_ka32", target, settings, target.url("/tiny"), 32, scripts["plain"])
    cpu = sample.detail.get("proxy_cpu_s")
    if cpu is not None and sample.detail["requests"]:
        sample.metrics["cpu_tiny"] = cpu / sample.detail["requests"] * 1e6
    return sample


def tiny_hdr32(target: Target, settings: Settings, scripts: dict[str, Path]) -> Sample:
    return wrk_sample("tiny_hdr32", target, settings, target.url("/tiny"), 32, scripts["headers"])


def tiny_ka256(target: Target, settings: Settings, scripts: dict[str, Path]) -> Sample:
    return wrk_sample("tiny_ka256", target, settings, target.url("/tiny"), 256, scripts["plain"])


def tiny_close32(target: Target, settings: Settings, scripts: dict[str, Path]) -> Sample:
    extra = ("-H", "Connection: close")
    url = target.url("/tiny")
    return wrk_sample("tiny_close32", target, settings, url, 32, scripts["plain"], extra)


def r1m16(target: Target, settings: Settings, scripts: dict[str, Path]) -> Sample:
    return wrk_sample("r1m16", target, settings, target.url("/1m"), 16, scripts["plain"])


# curl --------------------------------------------------------------------------------------


def curl_download(
    url: str, expected: int, extra: tuple[str, ...] = (), version: str | None = None
) -> float:
    """MB/s (10^6 bytes) of one download to /dev/null; `extra` curl options (TLS: --cacert,
    --http2), `version` the HTTP version curl must have spoken (`1.1`, `2`)."""
    done = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w",
         "%{http_code} %{size_download} %{speed_download} %{http_version}",
         "--max-time", "60", *extra, url],
        capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    fields = done.stdout.split()
    if done.returncode != 0 or len(fields) != 4:
        raise BenchError(f"curl {url}: exit {done.returncode} {done.stderr.strip()}")
    if fields[0] != "200" or int(fields[1]) != expected:
        raise BenchError(f"curl {url}: status {fields[0]}, {fields[1]} of {expected} bytes")
    if version is not None and fields[3] != version:
        raise BenchError(f"curl {url}: spoke HTTP/{fields[3]}, not HTTP/{version}")
    return float(fields[2]) / 1e6


def dl64m(target: Target, settings: Settings, scripts: dict[str, Path]) -> Sample:
    speeds = [curl_download(target.url("/64m"), 64 << 20) for _ in range(settings.downloads)]
    return Sample({"dl64m": statistics.median(speeds)}, {"runs_mb_s": speeds})


# WebSocket ---------------------------------------------------------------------------------


async def _ws_round_trips(url: str, count: int) -> float:
    async with ws_connect(url, compression=None, open_timeout=IO_TIMEOUT) as ws:
        for _ in range(WS_WARMUP):
            await ws.send(WS_MESSAGE)
            await ws.recv()
        start = time.perf_counter()
        for _ in range(count):
            await ws.send(WS_MESSAGE)
            if await ws.recv() != WS_MESSAGE:
                raise BenchError(f"{url}: the echo differs from the message")
        return count / (time.perf_counter() - start)


def ws_echo(target: Target, settings: Settings, scripts: dict[str, Path]) -> Sample:
    rate = asyncio.run(asyncio.wait_for(_ws_round_trips(target.ws_url(), settings.ws_messages), 60))
    return Sample({"ws_echo": rate}, {"messages": settings.ws_messages, "size": len(WS_MESSAGE)})


# SSE ---------------------------------------------------------------------------------------


class ChunkedDecoder:
    """Incremental `Transfer-Encoding: chunked` decoder (no trailers expected)."""

    def __init__(self) -> None:
        self.buffer = b""
        self.left = 0
        self.crlf_due = False
        self.done = False

    def feed(self, data: bytes) -> bytes:
        self.buffer += data
        out: list[bytes] = []
        while not self.done:
            if self.left:
                piece = self.buffer[: self.left]
                out.append(piece)
                self.buffer = self.buffer[len(piece) :]
                self.left -= len(piece)
                if self.left:
                    break
                self.crlf_due = True
            if self.crlf_due:
                if len(self.buffer) < 2:
                    break
                self.buffer, self.crlf_due = self.buffer[2:], False
            end = self.buffer.find(b"\r\n")
            if end < 0:
                break
            size = int(self.buffer[:end].split(b";")[0], 16)
            self.buffer = self.buffer[end + 2 :]
            self.left, self.done = size, size == 0
        return b"".join(out)


def _event_stamps(body: bytes) -> tuple[list[float], bytes]:
    """The `data:` timestamps of the complete events in `body`, and the incomplete rest."""
    *events, rest = body.split(b"\n\n")
    stamps = [
        float(line[5:])
        for event in events
        for line in event.split(b"\n")
        if line.startswith(b"data:")
    ]
    return stamps, rest


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    chunked = b"transfer-encoding: chunked" in head.lower()
    return status, chunked


async def _sse_delays(host: str, port: int, path: str, count: int) -> list[float]:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n\r\n"
        writer.write(request.encode())
        status, chunked = await _read_head(reader)
        if status != 200:
            raise BenchError(f"SSE {path}: status {status}")
        decoder = ChunkedDecoder() if chunked else None
        delays: list[float] = []
        body = b""
        while len(delays) < count:
            data = await reader.read(65536)
            now = time.monotonic()
            if not data:
                raise BenchError(f"SSE {path}: stream ended after {len(delays)} of {count} events")
            body += decoder.feed(data) if decoder else data
            stamps, body = _event_stamps(body)
            delays.extend(now - stamp for stamp in stamps)
        return delays
    finally:
        writer.close()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def sse_latency(target: Target, settings: Settings, scripts: dict[str, Path]) -> Sample:
    count = settings.sse_events + SSE_SKIP
    path = target.path("sse", f"/events?n={count}&interval_ms={settings.sse_interval_ms:g}")
    deadline = count * settings.sse_interval_ms / 1000 + 30
    coro = _sse_delays("127.0.0.1", target.app_port, path, count)
    delays = asyncio.run(asyncio.wait_for(coro, deadline))[SSE_SKIP:]
    ms = [d * 1000 for d in delays]
    metrics = {"sse_p50": _percentile(ms, 50), "sse_p99": _percentile(ms, 99)}
    return Sample(
        metrics, {"events": len(ms), "max_ms": max(ms), "interval_ms": settings.sse_interval_ms}
    )


# idle keep-alive connections -----------------------------------------------------------------


def _read_response(sock: socket.socket) -> int:
    """Read one response with a Content-Length body; return its status."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise BenchError("connection closed before a whole response head")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise BenchError("connection closed inside a response body")
        body += chunk
    return int(head.split(b" ", 2)[1])


def _open_idle(target: Target, count: int) -> list[socket.socket]:
    request = (
        f"GET {target.path('b', '/tiny')} HTTP/1.1\r\nHost: 127.0.0.1:{target.port}\r\n\r\n"
    ).encode()
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", target.port), timeout=IO_TIMEOUT)
            socks.append(sock)
            sock.sendall(request)
            if (status := _read_response(sock)) != 200:
                raise BenchError(f"idle connection {len(socks)}: status {status}")
    except BaseException:
        _close_all(socks)
        raise
    return socks


def _close_all(socks: list[socket.socket]) -> None:
    for sock in socks:
        sock.close()


def idle_conns(target: Target, settings: Settings, scripts: dict[str, Path]) -> Sample:
    pid = target.measured_pid
    if pid is None:
        return Sample()
    time.sleep(REST)  # a measured interval, not a wait for an event (see REST)
    at_rest = tree_mb(pid, "VmRSS")
    socks = _open_idle(target, settings.idle_conns)
    try:
        held = tree_mb(pid, "VmRSS")
        still_open = sum(1 for sock in socks if _is_open(sock))
    finally:
        _close_all(socks)
    sample = Sample(
        {"rss_idle": at_rest, "rss_1000": held},
        {"connections": settings.idle_conns, "still_open": still_open},
    )
    if still_open < settings.idle_conns:
        sample.detail["warning"] = (
            f"the proxy closed {settings.idle_conns - still_open} of the idle connections"
        )
        sample.detail["warning_for"] = ["rss_1000"]
    return sample


def _is_open(sock: socket.socket) -> bool:
    """False when the peer has closed the connection (a read would return EOF)."""
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


# before measuring --------------------------------------------------------------------------


def _http_get(port: int, path: str) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def sanity_check(target: Target) -> None:
    """Each route answers as expected through this target; raises BenchError if not."""
    status, body = _http_get(target.port, target.path("b", "/tiny"))
    if status != 200 or body != TINY_BODY.encode():
        raise BenchError(f"GET /b/tiny: status {status}, body {body[:80]!r}")
    coro = _sse_delays("127.0.0.1", target.app_port, target.path("sse", "/events?n=1"), 1)
    asyncio.run(asyncio.wait_for(coro, IO_TIMEOUT))
    asyncio.run(asyncio.wait_for(_ws_round_trips(target.ws_url(), 1), IO_TIMEOUT))


def warm_up(target: Target, settings: Settings, scripts: dict[str, Path]) -> None:
    warm = Settings(**{**settings.__dict__, "duration": settings.warmup})
    run_wrk(target.url("/tiny"), 16, warm, scripts["plain"])
