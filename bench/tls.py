"""The TLS workloads, through the rows that serve HTTPS (tuned nginx and sockgate's built-in
engine, all with the same certificate): HTTPS/1.1 and HTTP/2 small requests, new TLS connections
(full handshakes, and resumed ones) and a 64 MiB download over TLS with HTTP/1.1 and HTTP/2."""

from __future__ import annotations

import re
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from backends import TINY_BODY
from confs import TlsFiles
from procs import BenchError, tree_cpu_seconds
from proxies import Target
from workloads import Sample, Settings, curl_download, run_wrk, wrk_sample

H2_CONNS = 32
H2_STREAMS = 10
# Full handshakes: h2load resumes the TLS session when it reconnects (and so does wrk), so
# each h2load run opens this many connections, one request on each, and exits; two loops of
# such runs side by side keep the proxy busy while the other loop's h2load starts.
HANDSHAKE_BATCH = 16
HANDSHAKE_LOOPS = 2
H2LOAD_TIMEOUT = 60.0
CLIENT_TIMEOUT = 10.0


def make_certs(directory: Path) -> TlsFiles:
    """A CA in `directory`/ca made by sockgate's own code, and one leaf from it for localhost
    and 127.0.0.1 (P-256, as sockgate issues them) that nginx and sockgate both load."""
    from sockgate.tls import ca

    authority = ca.load_or_create(directory / "ca", ("localhost",))
    leaf = authority.issue(["localhost", "127.0.0.1"])
    cert, key = directory / "leaf.pem", directory / "leaf-key.pem"
    cert.write_bytes(leaf.cert_pem)
    key.touch(mode=0o600)
    key.write_bytes(leaf.key_pem)
    return TlsFiles(cert=cert, key=key, ca=authority.cert_path)


# h2load ------------------------------------------------------------------------------------

_FINISHED = re.compile(r"^finished in ([\d.]+)(m?s), ([\d.]+) req/s", re.M)
_REQUESTS = re.compile(
    r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout",
    re.M,
)
_STATUS = re.compile(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", re.M)
_PROTOCOL = re.compile(r"^Application protocol: (\S+)", re.M)


def run_h2load(
    args: list[str], url: str, protocol: str, timeout: float = H2LOAD_TIMEOUT
) -> dict[str, Any]:
    """h2load's counts; BenchError if it failed, spoke another protocol than `protocol`, or any
    request failed or answered other than 2xx."""
    done = subprocess.run(
        ["h2load", *args, url], capture_output=True, text=True, timeout=timeout, check=False
    )
    out = done.stdout
    finished, requests, status = _FINISHED.search(out), _REQUESTS.search(out), _STATUS.search(out)
    if done.returncode != 0 or not (finished and requests and status):
        said = (done.stderr.strip() or out.strip()).splitlines()
        raise BenchError(f"h2load exited with {done.returncode}: {said[-1] if said else ''}")
    total, _, _, succeeded, failed, errored, timeout = (int(n) for n in requests.groups())
    ok, *others = (int(n) for n in status.groups())
    spoke = _PROTOCOL.search(out)
    result = {
        "seconds": float(finished[1]) / (1000 if finished[2] == "ms" else 1),
        "rps": float(finished[3]),
        "requests": total,
        "succeeded": succeeded,
        "failed": failed,
        "errored": errored,
        "timeout": timeout,
        "2xx": ok,
        "non_2xx": sum(others),
        "protocol": spoke[1] if spoke else "none",
    }
    if result["protocol"] != protocol:
        raise BenchError(f"h2load spoke {result['protocol']}, not {protocol}")
    if failed or errored or timeout or result["non_2xx"] or not succeeded:
        raise BenchError(
            f"h2load: {succeeded} succeeded, {failed} failed, {errored} errored, {timeout} timed "
            f"out, {result['non_2xx']} not 2xx"
        )
    return result


def _with_cpu(sample: Sample, metric: str, count: int) -> Sample:
    cpu = sample.detail.get("proxy_cpu_s")
    if cpu is not None and count:
        sample.metrics[metric] = cpu / count * 1e6
    return sample


# the workloads -----------------------------------------------------------------------------


def tls_h1_tiny(target: Target, settings: Settings, scripts: dict[str, Path]) -> Sample:
    """wrk over HTTPS (no ALPN: HTTP/1.1), keep-alive, 32 connections."""
    url = target.tls_url("/tiny")
    return wrk_sample("tls_h1_tiny", target, settings, url, 32, scripts["plain"])


def h2_tiny(target: Target, settings: Settings, scripts: dict[str, Path]) -> Sample:
    """h2load: 32 connections x 10 concurrent streams for the duration, and the proxy's CPU
    time per request."""
    pid = target.measured_pid
    cpu_before = tree_cpu_seconds(pid) if pid is not None else 0.0
    threads = max(1, min(settings.wrk_threads, H2_CONNS))
    args = [f"-c{H2_CONNS}", f"-m{H2_STREAMS}", f"-t{threads}", f"-D{settings.duration}"]
    result = run_h2load(args, target.tls_url("/tiny"), "h2", settings.duration + H2LOAD_TIMEOUT)
    if pid is not None:
        result["proxy_cpu_s"] = tree_cpu_seconds(pid) - cpu_before
    sample = Sample({"h2_tiny": result["rps"]}, result)
    return _with_cpu(sample, "cpu_h2", result["succeeded"])


def _handshake_loop(url: str, until: float, totals: list[dict[str, Any]]) -> None:
    n = str(HANDSHAKE_BATCH)
    while time.monotonic() < until:
        totals.append(run_h2load(["--h1", "-n", n, "-c", n, "-t1"], url, "http/1.1"))


def tls_handshakes(target: Target, settings: Settings, scripts: dict[str, Path]) -> Sample:
    """New TLS connections per second, each a full handshake (h2load does not resume across
    runs) and one HTTPS/1.1 request, with 2 x 16 connections under way; and the proxy's CPU
    time per connection."""
    pid = target.measured_pid
    cpu_before = tree_cpu_seconds(pid) if pid is not None else 0.0
    runs: list[list[dict[str, Any]]] = [[] for _ in range(HANDSHAKE_LOOPS)]
    errors: list[BaseException] = []
    url = target.tls_url("/tiny")
    started = time.monotonic()

    def loop(totals: list[dict[str, Any]]) -> None:
        try:
            _handshake_loop(url, started + settings.duration, totals)
        except (BenchError, OSError, subprocess.SubprocessError) as exc:
            errors.append(exc)

    threads = [threading.Thread(target=loop, args=(totals,), daemon=True) for totals in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.monotonic() - started
    if errors:
        raise BenchError(f"handshake loop: {errors[0]}")
    connections = sum(run["succeeded"] for loop_runs in runs for run in loop_runs)
    detail: dict[str, Any] = {
        "connections": connections,
        "seconds": seconds,
        "h2load_runs": sum(len(loop_runs) for loop_runs in runs),
    }
    if pid is not None:
        detail["proxy_cpu_s"] = tree_cpu_seconds(pid) - cpu_before
    sample = Sample({"tls_handshakes": connections / seconds}, detail)
    return _with_cpu(sample, "cpu_handshake", connections)


def tls_resumed(target: Target, settings: Settings, scripts: dict[str, Path]) -> Sample:
    """wrk over HTTPS with `Connection: close`: a new connection per request, but wrk offers
    its last TLS session again, so nearly every handshake is a resumption."""
    extra = ("-H", "Connection: close")
    url = target.tls_url("/tiny")
    return wrk_sample("tls_resumed", target, settings, url, 32, scripts["plain"], extra)


def tls_64m(target: Target, settings: Settings, scripts: dict[str, Path]) -> Sample:
    """curl, verifying the certificate against the CA: 64 MiB over HTTP/1.1 and over HTTP/2."""
    url, size = target.tls_url("/64m"), 64 << 20
    metrics: dict[str, float] = {}
    detail: dict[str, Any] = {}
    for metric, flag, version in (("tls_dl64m_h1", "--http1.1", "1.1"),
                                  ("tls_dl64m_h2", "--http2", "2")):  # fmt: skip
        extra = ("--cacert", str(_ca(target)), flag)
        speeds = [curl_download(url, size, extra, version) for _ in range(settings.downloads)]
        metrics[metric] = statistics.median(speeds)
        detail[f"{metric}_runs_mb_s"] = speeds
    return Sample(metrics, detail)


# before measuring --------------------------------------------------------------------------


def _ca(target: Target) -> Path:
    """The CA file the row's certificate chains to."""
    assert target.tls is not None
    return target.tls.files.ca


def _curl_get(url: str, ca: Path, flag: str) -> tuple[str, str, str]:
    done = subprocess.run(
        ["curl", "-sS", "--max-time", str(CLIENT_TIMEOUT), "--cacert", str(ca), flag,
         "-w", "\n%{http_code} %{http_version}", url],
        capture_output=True, text=True, timeout=CLIENT_TIMEOUT + 5, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise BenchError(f"curl {flag} {url}: exit {done.returncode} {done.stderr.strip()}")
    body, _, last = done.stdout.rpartition("\n")
    status, _, version = last.partition(" ")
    return status, version, body


def sanity_check(target: Target) -> None:
    """`/b/tiny` over HTTPS/1.1 and HTTP/2, the certificate verified against the CA; raises
    BenchError if not."""
    url = target.tls_url("/tiny")
    for flag, expected in (("--http1.1", "1.1"), ("--http2", "2")):
        status, version, body = _curl_get(url, _ca(target), flag)
        if status != "200" or version != expected or body != TINY_BODY:
            raise BenchError(
                f"GET {url} {flag}: status {status}, HTTP/{version}, body {body[:80]!r}"
            )


def warm_up(target: Target, settings: Settings, scripts: dict[str, Path]) -> None:
    warm = Settings(**{**settings.__dict__, "duration": settings.warmup})
    run_wrk(target.tls_url("/tiny"), 16, warm, scripts["plain"])
    run_h2load(["-c8", f"-m{H2_STREAMS}", "-n2000"], target.tls_url("/tiny"), "h2")
