"""A real app for integration tests: HTTP, streaming, SSE and WebSocket, under uvicorn --uds."""

from __future__ import annotations

import asyncio
import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect


async def echo(request: Request) -> Response:
    body = await request.body()
    return JSONResponse(
        {
            "method": request.method,
            "path": request.url.path,
            "raw_path": request.scope["raw_path"].decode("latin-1"),
            "query": request.url.query,
            "headers": [
                [k.decode("latin-1"), v.decode("latin-1")] for k, v in request.scope["headers"]
            ],
            "body_len": len(body),
            "body_head": body[:64].decode("latin-1"),
        }
    )


async def events(request: Request) -> Response:
    count = int(request.query_params.get("n", "3"))
    gap = float(request.query_params.get("gap", "0.3"))

    async def gen():  # type: ignore[no-untyped-def]
        for i in range(count):
            yield f"id: {i}\ndata: {json.dumps({'i': i})}\n\n".encode()
            await asyncio.sleep(gap)

    return StreamingResponse(
        gen(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


async def big(request: Request) -> Response:
    size = int(request.query_params.get("mb", "1")) * 1024 * 1024
    block = b"x" * 65536

    async def gen():  # type: ignore[no-untyped-def]
        for _ in range(size // len(block)):
            yield block

    return StreamingResponse(
        gen(), media_type="application/octet-stream", headers={"Content-Length": str(size)}
    )


async def upload(request: Request) -> Response:
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
    return PlainTextResponse(str(total))


async def ws(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            msg = await websocket.receive_text()
            await websocket.send_text(f"echo: {msg}")
    except WebSocketDisconnect:
        pass


app = Starlette(
    routes=[
        Route("/events", events),
        Route("/big", big),
        Route("/upload", upload, methods=["POST", "PUT"]),
        WebSocketRoute("/ws", ws),
        Route(
            "/{path:path}",
            echo,
            methods=["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"],
        ),
    ]
)
