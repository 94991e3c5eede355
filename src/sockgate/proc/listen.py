"""The listening socket, made the same way by the built-in engine and its workers."""

from __future__ import annotations

import errno
import socket

BACKLOG = 1024


def listen_on(
    host: str, port: int, *, reuse_port: bool = False, listen: bool = True
) -> list[socket.socket]:
    """Sockets bound to every address of `host`, as loop.create_server would make them. With
    `reuse_port` they may share the port with other processes (workers); `listen=False` only
    reserves the port (the kernel hands connections to listening members alone)."""
    socks: list[socket.socket] = []
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            if listen:
                sock.listen(BACKLOG)
    except OSError:
        for sock in socks:
            sock.close()
        raise
    return socks


def bind_error(listen: str, exc: OSError, *, key: str = "listen") -> str:
    """`key`: the setting that names the address (`tls.listen` for HTTPS)."""
    if exc.errno == errno.EADDRINUSE:
        also = " or pass --listen" if key == "listen" else ""
        return (
            f"cannot listen on {listen}: address already in use (another server runs there; "
            f"change `{key}`{also})"
        )
    if exc.errno == errno.EACCES:
        return f"cannot listen on {listen}: permission denied (ports below 1024 need root)"
    return f"cannot listen on {listen}: {exc.strerror or exc}"
