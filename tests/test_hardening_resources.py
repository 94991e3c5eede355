"""Issue 5, resources: many idle keep-alive connections, running out of file descriptors, and
memory after a burst. Bounded in counts and time; the proxy's state is read from /proc (its
processes, their sockets, their memory), which gives no event to wait on: waits on it are bounded
polls, each said so where it sleeps."""

from __future__ import annotations

import os
import re
import resource
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import ProxyFactory, RawFactory
from tests.support.clients import DEADLINE, RawClient, request_bytes, vm_kib
from tests.support.proc import Proxy, free_port, write_config
from tests.support.rawapp import Conn

HOST = "localhost"  # a local name: accepted whatever Host policy the proxy applies
MIB = 1024 * 1024
TCP_LISTEN = "0A"  # the state column of /proc/net/tcp for a listening socket


@pytest.fixture(autouse=True)
def nofile_at_hard_limit() -> Iterator[int]:
    """The test process (and the proxy it starts, which inherits it) may open as many files as
    the hard limit allows: a thousand client sockets do not fit in the usual soft 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    yield hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# --- the proxy's processes, sockets and memory, from /proc -------------------------------------


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (the nginx engine runs nginx's master and worker under it)."""
    pids = [pid]
    for parent in pids:  # grows while it is walked
        try:
            tasks = Path(f"/proc/{parent}/task").iterdir()
            for task in tasks:
                pids += [int(p) for p in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue  # the process ended while we looked
    return pids


def tcp_states() -> dict[str, str]:
    """Socket inode -> TCP state, for every TCP socket of this network namespace."""
    states: dict[str, str] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            states[fields[9]] = fields[3]
    return states


def connection_sockets(proxy: Proxy) -> int:
    """TCP sockets the proxy's processes hold other than listening ones: its client
    connections (the apps are reached over Unix sockets, which are not counted)."""
    assert proxy.proc is not None
    states = tcp_states()
    inodes: set[str] = set()
    for pid in process_tree(proxy.proc.pid):
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except FileNotFoundError:
            continue
        for fd in fds:
            try:
                target = fd.readlink().name
            except FileNotFoundError:
                continue  # closed while we looked
            match = re.fullmatch(r"socket:\[(\d+)\]", target)
            if match and states.get(match.group(1), TCP_LISTEN) != TCP_LISTEN:
                inodes.add(match.group(1))  # a socket shared by two processes counts once
    return len(inodes)


def rss_kib(proxy: Proxy) -> int:
    """Resident memory of all the proxy's processes together (VmRSS)."""
    assert proxy.proc is not None
    return sum(vm_kib(pid, "VmRSS") for pid in process_tree(proxy.proc.pid))


def cpu_seconds(proxy: Proxy) -> float:
    """User and system CPU time of all the proxy's processes together."""
    assert proxy.proc is not None
    ticks = 0
    for pid in process_tree(proxy.proc.pid):
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def poll_until(predicate: Callable[[], bool], what: str, deadline: float = DEADLINE) -> None:
    end = time.monotonic() + deadline
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"not true after {deadline}s: {what}")
        time.sleep(0.05)  # /proc gives no event to wait on; bounded by the deadline


def wait_for_no_connections(proxy: Proxy) -> None:
    poll_until(
        lambda: connection_sockets(proxy) == 0,
        f"the proxy closed its client connections (still {connection_sockets(proxy)})",
    )


def get(client: RawClient, target: str) -> int:
    """One request on a kept-alive raw connection; the status of its complete response."""
    client.send(request_bytes(target, host=HOST))
    return client.response().status


# --- 1,000 idle keep-alive connections ---------------------------------------------------------

IDLE = 1000
# Descriptors the test process needs besides the idle clients: the load's connections, the raw
# app's sockets and the interpreter's own files.
SPARE = 200


class Load:
    """Normal requests, each on a new connection, one after another in a thread until stopped:
    the traffic that runs while the idle connections are held. Counts them; the first failure
    is kept and raised by `stop`."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.done = 0
        self.failure: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(DEADLINE)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                response = httpx.get(f"{self.proxy.url}/app/normal{self.done}", timeout=DEADLINE)
                assert response.status_code == 200, response
                assert response.text == "ok"
                self.done += 1
        except BaseException as exc:  # handed to the test by `stop`
            self.failure = exc

    def until(self, count: int) -> None:
        """Wait (bounded) until `count` requests in all went through, then stop."""
        end = time.monotonic() + DEADLINE
        while self.done < count and self.failure is None and time.monotonic() < end:
            time.sleep(0.01)  # a thread's count gives no event to wait on; bounded above
        self._stop.set()
        self._thread.join(DEADLINE)
        if self.failure is not None:
            raise self.failure
        assert self.done >= count, f"only {self.done} normal requests in {DEADLINE}s"


def closed_by_the_proxy(client: RawClient) -> bool:
    """The proxy ended this idle connection: a peek finds the end of the stream (or a reset)
    where an open, quiet connection has nothing to read yet."""
    client.sock.setblocking(False)  # with a timeout set, Python would wait for data instead
    try:
        data = client.sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    finally:
        client.sock.settimeout(DEADLINE)
    assert not data, f"the proxy sent {data!r} on an idle connection"
    return True


def test_thousand_idle_keep_alive_connections_while_requests_succeed(
    make_proxy: ProxyFactory, raw_app: RawFactory, nofile_at_hard_limit: int
) -> None:
    """A thousand clients each make a request and stay connected, idle, while normal requests
    go on; none of them is closed to make room (the nginx engine's `worker_connections 1024`
    used to drop about a hundred), and each still carries a second request."""
    if nofile_at_hard_limit < IDLE + SPARE:
        pytest.fail(
            f"RLIMIT_NOFILE hard limit {nofile_at_hard_limit} is too low for this test: it holds "
            f"{IDLE} connections and needs {IDLE + SPARE} descriptors (raise it: ulimit -Hn)"
        )
    app = raw_app(name="app")
    proxy = make_proxy({"app": app.path})
    idle: list[RawClient] = []
    try:
        with Load(proxy) as load:
            for i in range(IDLE):
                client = RawClient(proxy.port)
                idle.append(client)
                assert get(client, f"/app/idle{i}") == 200
            assert connection_sockets(proxy) >= IDLE, "the proxy let idle connections go"
            load.until(load.done + 20)  # and more requests with all of them open
        closed = sum(closed_by_the_proxy(client) for client in idle)
        assert closed == 0, f"the proxy closed {closed} of the {IDLE} idle connections"
        # Every idle connection was kept, not dropped to make room: each carries a second request.
        for i, client in enumerate(idle):
            assert get(client, f"/app/again{i}") == 200
    finally:
        for client in idle:
            client.close()
    wait_for_no_connections(proxy)
    assert httpx.get(f"{proxy.url}/app/after", timeout=DEADLINE).status_code == 200


# Under the app's listen backlog (asyncio's 100): nginx does not try a full queue again.
BURST = 90


def test_a_burst_of_connections_queued_at_once_is_accepted_whole(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    """Connections that wait in the listen queue together, each with its request sent, are all
    answered: however many the proxy takes per readiness of the listening socket, none is left
    waiting in the queue."""
    app = raw_app(name="app")
    proxy = make_proxy({"app": app.path})
    clients = [RawClient(proxy.port) for _ in range(BURST)]
    try:
        for i, client in enumerate(clients):
            client.send(request_bytes(f"/app/burst{i}", host=HOST))
        statuses = [client.response().status for client in clients]
    finally:
        for client in clients:
            client.close()
    assert statuses == [200] * BURST
    assert sorted(r.target for r in app.requests) == sorted(
        f"/burst{i}".encode() for i in range(BURST)
    )


# --- running out of file descriptors -------------------------------------------------------------

FD_LIMIT = 64
# A log line about accepting that names the limit: nginx says "accept4() failed (24: Too many
# open files)".
LIMIT = r"(too many open files|file descriptors)"
OUT_OF_FDS = re.compile(rf"accept.*{LIMIT}|{LIMIT}.*accept", re.IGNORECASE)


@pytest.fixture
def starved_proxy(tmp: Path, engine: str) -> Iterator[Callable[[Path], Proxy]]:
    """A proxy started under `prlimit --nofile=64:64`: it may hold 64 files, sockets included."""
    started: list[Proxy] = []

    def start(app_socket: Path) -> Proxy:
        port = free_port() if engine == "nginx" else 0
        body = "\n".join(
            [
                f'listen = "127.0.0.1:{port}"',
                'workdir = "work"',
                f'engine = "{engine}"',
                "[apps.app]",
                f'socket = "{app_socket}"',
            ]
        )
        proxy = Proxy(write_config(tmp / "sockgate.toml", body + "\n"), engine=engine)
        proxy.args = ["prlimit", f"--nofile={FD_LIMIT}:{FD_LIMIT}", *proxy.args]
        started.append(proxy.start())
        return proxy

    yield start
    for proxy in started:
        assert proxy.stop() == 0
        output = proxy.output()
        for sign in ("Traceback", "Task exception was never retrieved"):
            assert sign not in output, f"the proxy's stderr shows an escaped error:\n{output}"


def logs(proxy: Proxy) -> str:
    """What the proxy said: its stderr and its error.log."""
    error_log = proxy.config_path.parent / "work" / "logs" / "error.log"
    text = error_log.read_text(errors="replace") if error_log.exists() else ""
    return proxy.output() + text


def test_running_out_of_file_descriptors_pauses_accepting_and_logs_it(
    starved_proxy: Callable[[Path], Proxy], raw_app: RawFactory
) -> None:
    """Connections are opened (each answered, then held) until one gets no answer: the proxy
    cannot take another. It must neither crash nor spin: it says so in its log, the connection
    it could not take waits in the listen queue (it is not dropped), and once the others close,
    that connection is answered and new ones are too."""
    app = raw_app(name="app")
    proxy = starved_proxy(app.path)
    assert proxy.proc is not None
    held: list[RawClient] = []
    waiting: RawClient | None = None
    try:
        try:
            for i in range(FD_LIMIT * 2):  # bounded: the limit is reached well before
                client = RawClient(proxy.port, timeout=2)
                held.append(client)
                client.send(request_bytes(f"/app/hold{i}", host=HOST))
                try:
                    status = client.response().status
                except TimeoutError:  # no answer within 2 s: not accepted
                    waiting = held.pop()
                    break
                assert status == 200, f"connection {i} got {status}"
            assert waiting is not None, f"{len(held)} connections, and no limit was reached"
            assert len(held) > FD_LIMIT // 4, f"out of descriptors after {len(held)} connections"
            poll_until(
                lambda: bool(OUT_OF_FDS.search(logs(proxy))),
                "the proxy logged that it could not accept for lack of file descriptors",
            )
            assert proxy.proc.poll() is None, "the proxy died"
            # Paused, not spinning on a listening socket it cannot accept from: its CPU time
            # over one more second in which the queued connection gets no answer.
            cpu_before, wall_before = cpu_seconds(proxy), time.monotonic()
            waiting.sock.settimeout(1.0)
            with pytest.raises(TimeoutError):
                waiting.read_once()
            busy = (cpu_seconds(proxy) - cpu_before) / (time.monotonic() - wall_before)
            assert busy < 0.5, f"the proxy used {busy:.0%} of a CPU while out of descriptors"
        finally:
            for client in held:
                client.close()
        # Descriptors are free again: the connection that waited in the listen queue is served
        # (it was not accepted and dropped), and so is a new one.
        waiting.sock.settimeout(DEADLINE)
        assert waiting.response().status == 200, "the queued connection was not served"
    finally:
        if waiting is not None:
            waiting.close()
    with RawClient(proxy.port) as after:
        assert get(after, "/app/after") == 200, "the proxy does not accept again"
    assert proxy.proc.poll() is None


# --- memory after a burst --------------------------------------------------------------------


async def serve_small_and_big(conn: Conn) -> None:
    """`/big` gets 1 MiB, everything else a small body; keep-alive."""
    big = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % MIB + b"x" * MIB
    while (request := await conn.request()) is not None:
        if request.target.startswith(b"/big"):
            await conn.send(big)
        else:
            await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nsmall")


def burst(port: int, *, connections: int, requests: int, big: int) -> None:
    """`requests` small requests spread over `connections` kept-alive connections, and `big`
    1 MiB downloads on connections of their own, all at once; every connection closed after."""

    def small_worker(n: int) -> None:
        with RawClient(port) as client:
            for i in range(n):
                assert get(client, f"/app/small{i}") == 200

    def big_worker(i: int) -> None:
        with RawClient(port) as client:
            client.send(request_bytes(f"/app/big{i}", host=HOST))
            response = client.response()
            assert response.status == 200
            assert len(response.body) == MIB

    per_connection = requests // connections
    with ThreadPoolExecutor(max_workers=connections + big) as pool:
        jobs = [pool.submit(small_worker, per_connection) for _ in range(connections)]
        jobs += [pool.submit(big_worker, i) for i in range(big)]
        for job in jobs:
            job.result(timeout=60)


def test_memory_returns_to_its_baseline_after_a_burst(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    """A memory bound, not a timing one: after 2,000 requests over 50 connections and twenty
    1 MiB downloads, with every connection closed, the proxy is back within 20 MiB of what it
    used after a warm-up of the same shape."""
    app = raw_app(serve_small_and_big, name="app")
    proxy = make_proxy({"app": app.path})
    burst(proxy.port, connections=50, requests=200, big=4)  # warm-up: pools, buffers, imports
    wait_for_no_connections(proxy)
    baseline = rss_kib(proxy)

    burst(proxy.port, connections=50, requests=2000, big=20)
    wait_for_no_connections(proxy)
    after = rss_kib(proxy)
    assert after <= baseline + 20 * 1024, (
        f"the proxy holds {after - baseline} KiB more than its baseline of {baseline} KiB"
    )
    assert httpx.get(f"{proxy.url}/app/after", timeout=DEADLINE).status_code == 200
