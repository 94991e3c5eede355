"""sockgate's own status page, status.json and event stream, answered on a client connection:
for loopback clients only, read-only, and never holding a shutdown."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..addresses import is_loopback
from ..exchange.forward import Exchange
from ..exchange.phase import ANSWERED, move
from ..http import pages
from ..http.routing import Dashboard, NotFound
from ..status import monitor
from .clientstate import ClientState

if TYPE_CHECKING:
    from .client import ClientConnection


def refusal(ex: Exchange, client_ip: str) -> pages.Page | None:
    """The page that answers a status-page request instead, whatever the client's protocol:
    a client from elsewhere, a method that would change something."""
    decision = ex.decision
    assert type(decision) is Dashboard
    if not is_loopback(client_ip):
        if decision.at_root:  # `/` shows what it showed before there was a status page
            return ex.page_for(NotFound())
        return pages.Page(403, "sockgate's status page answers loopback clients only")
    if ex.head.method not in (b"GET", b"HEAD"):
        return pages.Page(405, "the status page is read-only")
    return None


def is_events(ex: Exchange) -> bool:
    decision = ex.decision
    assert type(decision) is Dashboard
    return decision.path == b"/events" and not decision.at_root


async def status_page(client: ClientConnection, ex: Exchange) -> bool:
    """True if the connection carries another request."""
    decision = ex.decision
    assert type(decision) is Dashboard
    head = ex.head
    refused = refusal(ex, client.client_ip)
    if refused is not None:
        return ex.answer(refused)
    if is_events(ex):
        return await _events(client, ex)
    engine = client.engine
    found = await monitor.page_or_json(engine.monitor, decision.path)
    if found is None:
        return ex.answer(pages.Page(404, "no such page", detail=f"try {engine.config.dashboard}"))
    content_type, body = found
    keep = client.can_continue(head)
    if keep:
        client.skip_end_of_request()
    ex.phase = move(ex.phase, ANSWERED)
    ex.status = 200
    response = monitor.reply(200, content_type, body, close=not keep)
    with_body = head.method != b"HEAD"
    ex.sent = len(body) if with_body else 0
    client.stream.write(response + body if with_body else response)
    return keep


async def _events(client: ClientConnection, ex: Exchange) -> bool:
    """The status document once a second, until the client leaves or sockgate stops; it counts
    as no app's stream and never holds the shutdown."""
    if client.closing:
        return ex.answer(pages.Page(503, "sockgate is stopping"))
    ex.phase = move(ex.phase, ANSWERED)
    ex.status = 200
    head = monitor.events_head()
    if ex.head.method == b"HEAD":
        client.stream.write(head)
        return False
    client.state = ClientState.EVENTS
    ex.sent = await client.engine.monitor.serve_events(client.stream, head, client.timeouts.send)
    return False
