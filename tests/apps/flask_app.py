"""A Flask app that believes it lives at `/`: a login flow, cookies and absolute links, under
gunicorn on a Unix socket. The one setting it needs behind sockgate is ProxyFix(x_prefix=1)."""

from __future__ import annotations

from flask import Flask, Response, jsonify, redirect, request, session, url_for
from werkzeug.middleware.proxy_fix import ProxyFix

app = Flask(__name__)
app.secret_key = "tests only"
# The one line: SCRIPT_NAME from X-Forwarded-Prefix, so url_for() builds /app1/... links.
app.wsgi_app = ProxyFix(app.wsgi_app, x_prefix=1)  # type: ignore[method-assign]


@app.get("/")
def index() -> Response | str:
    user = session.get("user")
    if user is None:
        # Written by hand, as if the app were at the root: sockgate moves it under the prefix.
        return redirect("/login")
    home = url_for("index", _external=True)
    return (
        f'<h1 id="hello">Hello {user}</h1>'
        f'<a id="home" href="{home}">home</a> <a id="links" href="{url_for("links")}">links</a>'
    )


@app.route("/login", methods=["GET", "POST"])
def login() -> Response | str:
    if request.method == "POST":
        session["user"] = request.form["user"]
        response = redirect(url_for("index"))  # built by Flask: already /app1/
        response.set_cookie("theme", "dark")  # Path=/ unless told otherwise
        return response
    return (
        f'<form method="post" action="{url_for("login")}">'
        '<input name="user"><button type="submit">log in</button></form>'
    )


@app.get("/links")
def links() -> Response:
    return jsonify(
        index=url_for("index"),
        external=url_for("index", _external=True),
        script_root=request.script_root,
    )


@app.get("/away")
def away() -> Response:
    """An absolute redirect to its own origin, built by hand without the prefix."""
    return redirect(f"http://{request.host}/login")
