"""Sockets of our own make. Not to be compiled with mypyc (hatch_build.py): a compiled class
cannot subclass socket.socket, whose instances have __slots__."""

from __future__ import annotations

import socket


class AcceptedSocket(socket.socket):
    """A socket from accept(), of the listening socket's family and a stream. socket.socket
    works both out by an enum conversion in Python on every access, and accepting and handing
    a connection to the loop asked five times: about 5% of the CPU of a connection."""

    __slots__ = ("_family",)

    def __init__(self, family: socket.AddressFamily, fd: int) -> None:
        super().__init__(family, socket.SOCK_STREAM, 0, fd)
        self._family = family

    @property
    def family(self) -> socket.AddressFamily:
        return self._family

    @property
    def type(self) -> socket.SocketKind:
        return socket.SOCK_STREAM


def client_ip(peer: object) -> str:
    """A client's address as the access log and X-Real-IP show it: a TCP peer's IP (the
    address accept() gave, or the transport's peername), "unix" for a Unix socket."""
    return peer[0] if isinstance(peer, tuple) else "unix"
