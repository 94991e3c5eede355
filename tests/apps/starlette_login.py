"""The login flow of flask_app.py on Starlette, for `uvicorn --uds PATH --root-path /app1`."""

from __future__ import annotations

from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route


async def index(request: Request) -> Response:
    user = request.cookies.get("user")
    if user is None:
        return RedirectResponse("/login", status_code=302)  # by hand: sockgate adds the prefix
    home = request.url_for("index")
    return HTMLResponse(f'<h1 id="hello">Hello {user}</h1><a id="home" href="{home}">home</a>')


async def login(request: Request) -> Response:
    if request.method == "POST":
        # Parsed by hand: request.form() would need python-multipart.
        form = parse_qs((await request.body()).decode())
        response = RedirectResponse(str(request.url_for("index")), status_code=302)
        response.set_cookie("user", form["user"][0])  # Path=/ by default
        return response
    action = request.url_for("login").path
    return HTMLResponse(
        f'<form method="post" action="{action}">'
        '<input name="user"><button type="submit">log in</button></form>'
    )


async def links(request: Request) -> Response:
    return JSONResponse(
        {
            "external": str(request.url_for("index")),
            "index": request.url_for("index").path,
            "root_path": request.scope.get("root_path", ""),
            "path": request.url.path,
            "scheme": request.url.scheme,
            "client": request.client.host if request.client else None,
        }
    )


app = Starlette(
    routes=[
        Route("/", index),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/links", links),
    ]
)
