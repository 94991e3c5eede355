"""Stream.relay (issue 4): a long body is read into a buffer of the stream's instead of a new
bytes object per read. The buffer is the process's, not the connection's: when the relay
ends it goes back to a few spares, so idle pooled connections hold none; a buffer whose bytes
are still queued for a peer is never reused. On uvloop, over a real Unix socket pair."""

from __future__ import annotations

import asyncio
import socket

import pytest
import uvloop

from sockgate.engine import stream as stream_module
from sockgate.engine.stream import SPARE_BUFFERS, Stream

BODY = bytes(range(256)) * 4096  # 1 MiB


async def relayed(kept: bool) -> tuple[bytes, Stream, list[memoryview]]:
    """Relay BODY from the far end of a socket pair; `kept`: the sink says it kept every view."""
    loop = asyncio.get_running_loop()
    near, far = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    _, stream = await loop.connect_accepted_socket(lambda: Stream(loop=loop), near)
    got = bytearray()
    views: list[memoryview] = []
    done = loop.create_future()

    def sink(view: memoryview) -> bool:
        got.extend(view)
        views.append(view)
        if len(got) >= len(BODY) and not done.done():
            done.set_result(None)
        return kept

    stream.relay(sink)
    far.setblocking(False)
    await loop.sock_sendall(far, BODY)
    await asyncio.wait_for(done, 10)
    stream.relay(None)
    far.close()
    stream.close()
    return bytes(got), stream, views


@pytest.mark.parametrize("kept", [False, True], ids=["sent-at-once", "queued"])
def test_a_relay_gives_its_buffer_back_unless_the_peer_still_holds_it(kept: bool) -> None:
    stream_module._spare.clear()
    got, stream, views = uvloop.run(relayed(kept))
    assert got == BODY
    assert stream._relay is None  # the connection holds no buffer once the relay ended
    spares = stream_module._spare
    assert len(spares) <= SPARE_BUFFERS
    bases = {id(view.obj) for view in views}
    if kept:
        # Each read went to a new buffer, and none of them is handed out again.
        assert len(bases) == len(views) > 1
        assert not bases & {id(view.obj) for view in spares}
    else:
        assert len(bases) == 1  # one buffer, read into again and again
        assert bases == {id(view.obj) for view in spares}
    stream_module.release_spares()  # at rest
    assert not stream_module._spare
