"""Each app's location blocks in nginx.conf: the redirect of its bare mount, proxy_pass to its
upstream, the headers the app is told, the rewrites of redirects and cookie paths under its
prefix, and its body size limit."""

from __future__ import annotations

import re

from ..config import DEFAULT_PREFIX_HEADERS, App, Config
from .tree import Directive, block, directive

# The app name for requests no app served (not a valid app name, so never ambiguous).
NO_APP = "-"


def upstream_name(app: App) -> str:
    return f"sockgate_{app.name}"


def app_locations(config: Config, app: App, scheme: str = "http") -> list[Directive]:
    """`scheme`: what the server's clients speak (`https` on the TLS listener), which the
    app's absolute redirects to its own origin say too (it is told X-Forwarded-Proto)."""
    # Stripping "/" from "/" changes nothing; without a URI part nginx also forwards the path
    # exactly as the client wrote it instead of its normalised form.
    strip = app.prefixed
    upstream = f"http://{upstream_name(app)}" + ("/" if strip else "")
    body = [
        directive("set", "$sockgate_app", app.name),
        directive("proxy_pass", upstream),
        *_headers(app, strip),
        *_rewrites(app, scheme),
        directive(
            "client_max_body_size",
            _size(config.body_limit(app) or 0),
            comment="From the config; 0 is unlimited. nginx's default, 1m, silently caps uploads.",
        ),
    ]
    path = "prefix stripped" if strip else "path unchanged"
    about = f"app {app.name}: {app.prefix} -> unix:{app.socket} ({path})"
    if app.prefix == "/":
        return [block("location", app.prefix, body=body, comment=about)]
    redirect = block(
        "location",
        "=",
        app.mount,
        body=[
            directive("set", "$sockgate_app", app.name),
            directive("return", "301", f"{app.prefix}$is_args$args"),
        ],
        comment=f"{about}\n{app.mount} itself is redirected to {app.prefix}, query kept.",
    )
    return [redirect, block("location", app.prefix, body=body)]


def _headers(app: App, strip: bool) -> list[Directive]:
    def header(name: str, value: str, comment: str = "") -> Directive:
        return directive("proxy_set_header", name, value, comment=comment)

    return [
        header(
            "Host",
            "$sockgate_host",
            comment="The reference's $host drops the port, and Jupyter then refuses the browser.",
        ),
        header("X-Real-IP", "$remote_addr"),
        header("X-Forwarded-For", "$proxy_add_x_forwarded_for"),
        header("X-Forwarded-Proto", "$scheme"),
        header("X-Forwarded-Host", "$sockgate_host"),
        *_prefix_headers(app, strip),
        header("Upgrade", "$sockgate_upgrade", comment="Empty (not sent) for h2c: see the map."),
        header("Connection", "$connection_upgrade"),
        header(
            "HTTP2-Settings",
            "",
            comment="Sent only with Upgrade: h2c, which never reaches the app; hop-by-hop anyway.",
        ),
    ]


def _prefix_headers(app: App, strip: bool) -> list[Directive]:
    """The stripped prefix in each of prefix_headers; the others set empty, which nginx does not
    send: a client's own copy is dropped instead of passed on."""
    told = app.prefix_headers if strip else ()
    silent = [name for name in (*DEFAULT_PREFIX_HEADERS, *app.prefix_headers) if name not in told]
    silent = list(dict.fromkeys(silent))
    comment = "The part of the path that was stripped, in each of prefix_headers."
    empty = (
        "Empty: not sent, and a client's own copy is dropped."
        if strip
        else "Nothing is stripped; an empty value also drops one the client sent."
    )
    return [
        *(
            directive("proxy_set_header", name, app.mount, comment=comment if i == 0 else "")
            for i, name in enumerate(told)
        ),
        *(
            directive("proxy_set_header", name, "", comment=empty if i == 0 else "")
            for i, name in enumerate(silent)
        ),
    ]


def _rewrites(app: App, scheme: str) -> list[Directive]:
    """The closest nginx has to rewrite.py: Location/Refresh and cookie paths under the prefix."""
    if not app.rewrites:
        return [
            directive(
                "proxy_redirect",
                "off",
                comment="Location and Refresh headers pass unchanged (rewrite = false or nothing "
                "stripped).",
            )
        ]
    mount = app.mount
    # Root-relative, not scheme-relative (`//`), not already under the prefix (`/app10` is not).
    outside = f"^/(?!/|{_pcre(mount[1:])}(?:[/?#]|$))(.*)$"
    own = f"{scheme}://$http_host"
    return [
        directive(
            "proxy_redirect",
            f"~{outside}",
            f"{mount}/$1",
            comment=(
                "Location and Refresh: a root-relative target goes under the prefix, once.\n"
                "The first proxy_redirect that matches applies."
            ),
        ),
        directive(
            "proxy_redirect",
            f"{own}{mount}",
            f"{own}{mount}",
            comment="An absolute URL to this origin already under the prefix stays as it is...",
        ),
        directive(
            "proxy_redirect",
            f"{own}/",
            f"{own}{mount}/",
            comment="...one outside it gets the prefix.",
        ),
        directive(
            "proxy_cookie_path",
            f"~^/(?!{_pcre(mount[1:])}(?:/|$))(.*)$",
            f"{mount}/$1",
            comment="Set-Cookie: Path=/ becomes the prefix, Path=/x goes under it, once.",
        ),
    ]


def _pcre(text: str) -> str:
    """`text` as a literal in a PCRE pattern (a prefix never holds `$`: checks.check refuses it)."""
    return re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\1", text)


def _size(size: int) -> str:
    for unit, factor in (("g", 1024**3), ("m", 1024**2), ("k", 1024)):
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)
