"""Bytes both ways after an upgrade, untouched, with half-close, until both sides are done."""

from __future__ import annotations

import asyncio

from .stream import Stream


async def splice(client: Stream, app: Stream, idle_timeout: float) -> None:
    """Pump until both directions reach end of stream; raise TimeoutError after idle_timeout
    without a byte either way. A reset on either side ends both (the caller closes them)."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(idle_timeout) as scope:

        async def pump(src: Stream, dst: Stream) -> None:
            try:
                while data := await src.read():
                    dst.write(data)
                    await dst.drain()
                    scope.reschedule(loop.time() + idle_timeout)
            except ConnectionError:
                # A reset ends the tunnel both ways; the other pump then sees end of stream.
                src.abort()
                dst.abort()
                return
            # Pass the half-close on: the other direction may still have bytes to carry.
            dst.write_eof()

        async with asyncio.TaskGroup() as group:
            group.create_task(pump(client, app))
            group.create_task(pump(app, client))
