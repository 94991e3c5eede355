"""Reading sockgate's own status: status.json over HTTP, and its event stream, which pushes the
status document once a second. Waiting for a state means reading those pushes until one shows
it (or a deadline passes): sockgate's own events, not a sleep loop."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx

from tests.support.clients import RawClient, Response, request_bytes

PREFIX = "/_sockgate/"
Doc = dict[str, Any]


def status_json(port: int, prefix: str = PREFIX) -> Doc:
    response = httpx.get(f"http://127.0.0.1:{port}{prefix}status.json", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    doc: Doc = response.json()
    return doc


def app_row(doc: Doc, name: str) -> Doc:
    rows = [a for a in doc["apps"] if a["name"] == name]
    assert len(rows) == 1, doc
    return rows[0]


class StatusEvents:
    """The status page's event stream on a raw connection."""

    def __init__(self, port: int, prefix: str = PREFIX) -> None:
        self.client = RawClient(port)
        try:
            self.client.send(
                request_bytes(f"{prefix}events", headers=[("Accept", "text/event-stream")])
            )
            self.response: Response = self.client.head()
        except BaseException:
            self.client.close()  # no `with` will: left to the collector, it fails a later test
            raise
        self._used = 0

    def __enter__(self) -> StatusEvents:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def next_doc(self) -> Doc:
        """The next event's document (each recv is bounded by the client's timeout)."""
        body = self.response.body
        self.client.wait(lambda: b"\n\n" in body[self._used :], "the next status event")
        end = body.index(b"\n\n", self._used)
        event = bytes(body[self._used : end])
        self._used = end + 2
        assert event.startswith(b"data: "), event
        doc: Doc = json.loads(event[len(b"data: ") :])
        return doc

    def wait_for(self, predicate: Callable[[Doc], bool], what: str, deadline: float = 10) -> Doc:
        """The first pushed document for which `predicate` holds, within `deadline` seconds."""
        end = time.monotonic() + deadline
        seen: Doc | None = None
        while time.monotonic() < end:
            seen = self.next_doc()
            if predicate(seen):
                return seen
        raise AssertionError(f"no status event showed {what} within {deadline}s; last: {seen}")
