"""Every workload the bench can run, the figures each one yields, and `--workloads`' choice of
them. The plain-HTTP workloads are in workloads.py, the TLS ones in tls.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import tls
import workloads as plain
from proxies import Target
from workloads import Metric, Sample, Settings

# fmt: off
METRICS = [
    Metric("tiny_ka32", "tiny, keep-alive, 32 conns", "req/s", True),
    Metric("tiny_hdr32", "tiny + ~800 B browser headers, 32 conns", "req/s", True),
    Metric("tiny_ka256", "tiny, keep-alive, 256 conns", "req/s", True),
    Metric("tiny_close32", "new connection per request, 32 conns", "req/s", True),
    Metric("r1m16", "1 MiB responses, 16 conns", "req/s", True),
    Metric("dl64m", "one 64 MiB download (curl)", "MB/s", True),
    Metric("ws_echo", "WebSocket echo, 1 client, round trips", "msg/s", True),
    Metric("sse_p50", "SSE delivery latency p50", "ms", False),
    Metric("sse_p99", "SSE delivery latency p99", "ms", False),
    Metric("cpu_tiny", "proxy CPU per tiny request (keep-alive 32)", "us/req", False, True),
    Metric("rss_idle", "proxy RSS at rest (after load)", "MB", False, True),
    Metric("rss_1000", "proxy RSS, 1,000 idle keep-alive conns", "MB", False, True),
    # over HTTPS: n/a for the rows without a TLS listener
    Metric("tls_h1_tiny", "HTTPS/1.1 tiny, keep-alive, 32 conns", "req/s", True, tls=True),
    Metric("h2_tiny", "HTTP/2 tiny, 32 conns x 10 streams (h2load)", "req/s", True, tls=True),
    Metric("cpu_h2", "proxy CPU per HTTP/2 tiny request", "us/req", False, True, tls=True),
    Metric("tls_handshakes", "new TLS connection per request, full handshake", "conn/s", True,
           tls=True),
    Metric("cpu_handshake", "proxy CPU per new TLS connection (full handshake)", "us/conn",
           False, True, tls=True),
    Metric("tls_resumed", "new TLS connection per request, resumed session (wrk)", "conn/s",
           True, tls=True),
    Metric("tls_dl64m_h1", "one 64 MiB download over TLS, HTTP/1.1 (curl)", "MB/s", True,
           tls=True),
    Metric("tls_dl64m_h2", "one 64 MiB download over TLS, HTTP/2 (curl)", "MB/s", True,
           tls=True),
    # the whole bench's, whichever workloads ran: last
    Metric("rss_peak", "proxy peak RSS (VmHWM, whole bench)", "MB", False, True),
]
# fmt: on
METRIC_BY_KEY = {m.key: m for m in METRICS}
ALWAYS = ("rss_peak",)
"""Measured at the end of every bench, whichever workloads ran."""

Runner = Callable[[Target, Settings, dict[str, Path]], Sample]


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    run: Runner
    metrics: tuple[str, ...]
    timed: bool = False
    """A run of `--duration` seconds (wrk, h2load): what the time estimate counts."""

    @property
    def tls(self) -> bool:
        return METRIC_BY_KEY[self.metrics[0]].tls


# fmt: off
WORKLOADS = [
    Workload("tiny_ka32", "tiny, keep-alive, 32 conns (+ CPU per request)", plain.tiny_ka32,
             ("tiny_ka32", "cpu_tiny"), timed=True),
    Workload("tiny_hdr32", "tiny + browser headers, 32 conns", plain.tiny_hdr32, ("tiny_hdr32",),
             timed=True),
    Workload("tiny_ka256", "tiny, keep-alive, 256 conns", plain.tiny_ka256, ("tiny_ka256",),
             timed=True),
    Workload("tiny_close32", "new connection per request, 32 conns", plain.tiny_close32,
             ("tiny_close32",), timed=True),
    Workload("r1m16", "1 MiB responses, 16 conns", plain.r1m16, ("r1m16",), timed=True),
    Workload("dl64m", "64 MiB downloads", plain.dl64m, ("dl64m",)),
    Workload("ws_echo", "WebSocket echo", plain.ws_echo, ("ws_echo",)),
    Workload("sse", "SSE delivery latency", plain.sse_latency, ("sse_p50", "sse_p99")),
    Workload("idle", "RSS with idle keep-alive connections", plain.idle_conns,
             ("rss_idle", "rss_1000")),
    Workload("tls_h1_tiny", "HTTPS/1.1 tiny, keep-alive, 32 conns", tls.tls_h1_tiny,
             ("tls_h1_tiny",), timed=True),
    Workload("h2_tiny", "HTTP/2 tiny, 32 conns x 10 streams (+ CPU per request)", tls.h2_tiny,
             ("h2_tiny", "cpu_h2"), timed=True),
    Workload("tls_handshakes", "new TLS connections, full handshakes (+ CPU per connection)",
             tls.tls_handshakes, ("tls_handshakes", "cpu_handshake"), timed=True),
    Workload("tls_resumed", "new TLS connections, resumed sessions", tls.tls_resumed,
             ("tls_resumed",), timed=True),
    Workload("tls_64m", "64 MiB downloads over TLS, HTTP/1.1 and HTTP/2", tls.tls_64m,
             ("tls_dl64m_h1", "tls_dl64m_h2")),
]
# fmt: on
GROUPS = {
    "all": [w.key for w in WORKLOADS],
    "plain": [w.key for w in WORKLOADS if not w.tls],
    "tls": [w.key for w in WORKLOADS if w.tls],
}


def select(spec: str | None) -> list[Workload]:
    """`--workloads`: comma-separated workload keys (`-` or `_`) and groups (all, plain, tls),
    in the bench's order; ValueError naming what is unknown."""
    if not spec:
        return list(WORKLOADS)
    wanted: set[str] = set()
    unknown = []
    for item in spec.split(","):
        name = item.strip().replace("-", "_")
        if name in GROUPS:
            wanted.update(GROUPS[name])
        elif any(w.key == name for w in WORKLOADS):
            wanted.add(name)
        else:
            unknown.append(item)
    if unknown:
        raise ValueError(f"unknown workloads {', '.join(unknown)}")
    return [w for w in WORKLOADS if w.key in wanted]


def metrics_of(chosen: list[Workload]) -> list[Metric]:
    """The figures the chosen workloads yield (and those measured always), in table order."""
    keys = {k for w in chosen for k in w.metrics} | set(ALWAYS)
    return [m for m in METRICS if m.key in keys]
