"""The response head towards an HTTP/1.1 client: its framing, and whether the connection carries
another request. Pure: the app's response head in, what to send out."""

from __future__ import annotations

from ..config import App
from .events import Framing, Headers, RequestHead, ResponseHead
from .headers import to_client, unchanged_for_client
from .serialise import response_head


def keeps_alive(head: RequestHead, framing: Framing) -> bool:
    """Whether HTTP lets the client connection carry another request after this response."""
    return head.keep_alive and not head.upgrade and framing is not Framing.UNTIL_CLOSE


def plan(
    head: RequestHead,
    response: ResponseHead,
    app: App | None,
    *,
    reusable: bool,
    scheme: bytes = b"http",
) -> tuple[Framing, bool, bytes]:
    """The framing towards the client, whether its connection carries another request, and the
    response head to send. `reusable`: nothing on sockgate's side ends the connection (sockgate
    is not stopping, the client's bytes still parse, the request body was read whole)."""
    framing, out = client_framing(head, response, app, scheme)
    keep = reusable and keeps_alive(head, framing)
    if not keep:
        out.append((b"Connection", b"close"))
    elif head.version == b"1.0":
        out.append((b"Connection", b"keep-alive"))
    return framing, keep, response_head(response.status, response.reason, out)


def client_framing(
    head: RequestHead, response: ResponseHead, app: App | None, scheme: bytes = b"http"
) -> tuple[Framing, Headers]:
    """How the body goes to the client, and the app's headers as the client gets them with the
    framing header that goes with it."""
    out = to_client(
        response.headers,
        upgrade=False,
        app=app,
        host=head.host,
        watched=response.watched,
        scheme=scheme,
    )
    if response.framing is Framing.NONE:
        if (
            response.content_length is not None
            and response.status >= 200
            and response.status != 204
        ):
            out.append((b"Content-Length", b"%d" % response.content_length))
        return Framing.NONE, out
    if response.framing is Framing.LENGTH:
        out.append((b"Content-Length", b"%d" % (response.content_length or 0)))
        return Framing.LENGTH, out
    if head.version == b"1.1":
        out.append((b"Transfer-Encoding", b"chunked"))
        return Framing.CHUNKED, out
    return Framing.UNTIL_CLOSE, out


def passes_unchanged(
    head: RequestHead, response: ResponseHead, whole: bytes, app: App, *, reusable: bool
) -> bool:
    """Whether `whole`, one read from the app holding exactly this response, is what `plan` and
    the header policy would send: a Content-Length response, nothing after it, to a kept-alive
    HTTP/1.1 request. It then goes to the client as it came."""
    length = response.content_length
    return (
        response.framing is Framing.LENGTH
        and length is not None
        and head.version == b"1.1"
        and reusable
        and keeps_alive(head, Framing.LENGTH)
        and response.keep_alive
        and whole.startswith(b"HTTP/1.1 ")
        # llhttp has checked the head, so its first blank line is its end.
        and whole.find(b"\r\n\r\n") + 4 + length == len(whole)
        and unchanged_for_client(response.headers, app, watched=response.watched)
    )
