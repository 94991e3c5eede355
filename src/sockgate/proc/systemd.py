"""What systemd hands a service, and what it is told back: the notify socket (`sd_notify`:
READY=1, RELOADING=1, STOPPING=1) and the listening sockets of socket activation
(`sd_listen_fds`). Both come in environment variables, which are taken out of `os.environ` when
read, so that no process sockgate starts (a supervised app, nginx) takes them for its own.

The notify protocol is one datagram of `KEY=VALUE` lines to the AF_UNIX socket named by
$NOTIFY_SOCKET (a leading '@' is Linux's abstract namespace). Without it every call is a no-op.
Only the process that took the variable sends: workers and the apps process are forked from it,
and systemd listens to the main process alone (NotifyAccess=main).
"""

from __future__ import annotations

import logging
import os
import socket
import time

from ..addresses import is_loopback
from ..config import Config, Listen
from ..errors import SockgateError

log = logging.getLogger(__name__)

# sd_listen_fds(3): the first file descriptor systemd passes.
LISTEN_FDS_START = 3
ACTIVATION_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
SEND_TIMEOUT = 1.0
TCP_FAMILIES = {socket.AF_INET: "IPv4", socket.AF_INET6: "IPv6"}


class Notifier:
    """The notify socket of the process that took $NOTIFY_SOCKET (`take_environment`)."""

    def __init__(self) -> None:
        self.address: str | bytes | None = None
        self.pid = 0
        self._warned = False

    def __repr__(self) -> str:
        return f"<Notifier {self.address!r} pid={self.pid}>"

    def take_environment(self) -> None:
        """Read $NOTIFY_SOCKET and remove it from the environment."""
        value = os.environ.pop("NOTIFY_SOCKET", "")
        self.pid = os.getpid()
        self.address = None
        if value.startswith("@"):
            self.address = b"\0" + os.fsencode(value[1:])
        elif value.startswith("/"):
            self.address = value
        elif value:
            log.warning("NOTIFY_SOCKET=%s: not a Unix socket path; systemd is not told", value)

    def send(self, *fields: str) -> None:
        """One datagram of `fields`, one a line; nothing outside systemd or in a forked child."""
        if self.address is None or os.getpid() != self.pid:
            return
        message = "\n".join(fields).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.settimeout(SEND_TIMEOUT)
                sock.sendto(message, self.address)
        except OSError as exc:
            # Not worth stopping for: systemd's own timeout reports a READY=1 that never came.
            level = logging.DEBUG if self._warned else logging.WARNING
            self._warned = True
            log.log(level, "cannot tell systemd %s: %s", " ".join(fields), exc.strerror or exc)


NOTIFIER = Notifier()


def take_environment() -> None:
    """Take NOTIFY_SOCKET for this process (the main one); call before starting any other."""
    NOTIFIER.take_environment()


def ready(listen: str) -> None:
    """Serving: the socket listens and connections are accepted."""
    NOTIFIER.send("READY=1", f"MAINPID={os.getpid()}", f"STATUS=listening on {listen}")


def reloading() -> None:
    """A reload starts; `ready` again when it is over, applied or refused."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    NOTIFIER.send("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading")


def reloaded(listen: str) -> None:
    NOTIFIER.send("READY=1", f"STATUS=listening on {listen}")


def stopping() -> None:
    NOTIFIER.send("STOPPING=1", "STATUS=stopping: finishing requests under way")


# --- socket activation ------------------------------------------------------------------------


def listen_fds() -> int:
    """How many sockets systemd passed to this process (LISTEN_PID, LISTEN_FDS). The variables
    are removed from the environment whoever they were meant for."""
    pid, count = (os.environ.pop(name, None) for name in ACTIVATION_VARIABLES[:2])
    os.environ.pop("LISTEN_FDNAMES", None)
    if pid is None or count is None:
        return 0
    try:
        if int(pid) != os.getpid():
            return 0  # meant for a process that started us
        fds = int(count)
    except ValueError:
        raise SockgateError(
            f"socket activation: LISTEN_PID={pid} LISTEN_FDS={count}: expected numbers"
        ) from None
    if fds < 0:
        raise SockgateError(f"socket activation: LISTEN_FDS={count}: expected a count")
    return fds


def activated(config: Config) -> list[socket.socket] | None:
    """The listening sockets systemd passed (socket activation), checked; None without any.

    Each must be a listening TCP socket, and on a loopback address unless the config has
    `allow_remote = true`, as the config's own `listen` must."""
    count = listen_fds()
    if count == 0:
        return None
    socks: list[socket.socket] = []
    try:
        for fd in range(LISTEN_FDS_START, LISTEN_FDS_START + count):
            sock = _adopt(fd)
            socks.append(sock)
            _check_exposure(config, sock)
    except BaseException:
        for sock in socks:
            sock.detach()  # refused: left as systemd passed them
        raise
    for sock in socks:
        log.info(
            "socket activation: serving %s, passed by systemd (fd %d); `listen` (%s) is not bound",
            address_of(sock),
            sock.fileno(),
            config.listen,
        )
    return socks


def address_of(sock: socket.socket) -> Listen:
    host, port = sock.getsockname()[:2]
    return Listen(host, port)


def _adopt(fd: int) -> socket.socket:
    """The socket at `fd`, if it is one sockgate can serve."""
    where = f"socket activation: file descriptor {fd} passed by systemd"
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise SockgateError(f"{where} is not a socket ({exc.strerror or exc})") from None
    try:
        if sock.family not in TCP_FAMILIES or sock.type != socket.SOCK_STREAM:
            raise SockgateError(
                f"{where} is {_kind(sock)}, not a TCP socket: sockgate serves HTTP on TCP "
                "(ListenStream=127.0.0.1:PORT in the .socket unit)"
            )
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            raise SockgateError(
                f"{where} ({address_of(sock)}) is not listening: expected a listening socket "
                "(ListenStream= in the .socket unit, Accept=no)"
            )
    except BaseException:
        sock.detach()  # not ours to close: whoever passed it keeps it
        raise
    # systemd passes it inheritable; the processes sockgate starts must not hold the port.
    sock.set_inheritable(False)
    return sock


def _kind(sock: socket.socket) -> str:
    if sock.family == socket.AF_UNIX:
        return "a Unix socket"
    family = TCP_FAMILIES.get(sock.family, f"a family {sock.family} socket")
    if sock.type == socket.SOCK_DGRAM:
        return f"a UDP ({family}) socket"
    return f"a {family} socket of type {sock.type}"


def _check_exposure(config: Config, sock: socket.socket) -> None:
    address = address_of(sock)
    if is_loopback(address.host) or config.allow_remote:
        return
    raise SockgateError(
        f"socket activation: systemd passed {address}, which is not a loopback address: every "
        "app would be reachable from the network. Use ListenStream=127.0.0.1:PORT in the "
        "socket unit, or set allow_remote = true in the config to mean it"
    )
