"""The states of a client connection, and why its parked task wakes up."""

from __future__ import annotations

from enum import Enum, auto


class ClientState(Enum):
    WAITING = auto()  # for a request head
    ACTIVE = auto()  # an exchange is under way
    TUNNEL = auto()  # upgraded: bytes flow both ways
    EVENTS = auto()  # sockgate's own status event stream: ends at once on shutdown
    CLOSED = auto()


class Wake(Enum):
    """Why a parked connection task wakes up."""

    EVENTS = auto()  # the request parser holds a request the callbacks did not take
    EXCHANGE = auto()  # the callbacks hand an exchange over (`handed`), decided already
    EOF = auto()  # the client closed (or the connection is gone) between requests
    TIMEOUT = auto()  # no request (head) in time
    CLOSE = auto()  # an exchange finished and the connection does not carry another
    DRAIN = auto()  # responses wait for the client to read them before the next request
