"""Which server block answers which Host in nginx.conf: the 421 guard for foreign names, the
names of the server that routes by prefix, and the host routes (a server per app that has host
names, serving it at the root of its own origin, and one that answers 404 to the other
*.localhost names).

nginx picks a server by exact name first, then by the longest leading wildcard (`*.x`), then by
the first regex; the built-in engine (http/routing.py, HostRoutes) asks the apps' exact names,
then their patterns longest first, before any other rule. So a name of the prefix server that an
app's host covers is left out of it (nginx would pick the prefix server for an allowed `x.test`
under an app's `*.test`), and so are the *.localhost names when those are the apps' (the built-in
engine answers 404 to one that is no app's, allowed or not).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import LOCAL_SUFFIX, App, Config
from ..http.routing import at_own_host
from .locations import NO_APP, app_locations
from .tree import Directive, block, directive

_MISDIRECTED = (
    "421 Misdirected Request: sockgate answers only local names (localhost, *.localhost, "
    "127.0.0.0/8, [::1]) and those listed in allowed_hosts (DNS rebinding protection).\n"
)
_LOCAL_NAMES = ("localhost", "*" + LOCAL_SUFFIX, r"~^127\.\d+\.\d+\.\d+$", "[::1]")
# A path with a `.` or `..` segment, also percent-encoded or behind an encoded slash, in the
# request line as the client wrote it (http/routing.py, has_dot_segment, says the same).
DOT_SEGMENT = r"^[^?]*(/|%2f)([.]|%2e){1,2}(/|%2f|[?]|$)"
# nginx's default server_names_hash_bucket_size (the CPU's cache line, 64 on x86-64) holds exact
# names up to 46 characters; longer ones need bigger buckets, or nginx -t fails.
_BUCKET = 64


@dataclass(frozen=True, slots=True)
class Listener:
    """An address the servers listen on: what each of them opens with. `params` follow the
    address in `listen` (`ssl`); `settings` are the server directives that go with them (the
    certificate); `scheme` is what its clients speak. The plain listener is
    `Listener(str(config.listen))`."""

    address: str
    params: tuple[str, ...] = ()
    settings: tuple[Directive, ...] = ()
    scheme: str = "http"

    def directives(self, *, default: bool = False) -> list[Directive]:
        """`listen ...;` (as the default server of its address with `default`), then the
        settings."""
        flags = ("default_server",) if default else ()
        return [directive("listen", self.address, *flags, *self.params), *self.settings]


def host_guard(config: Config, listener: Listener) -> list[Directive]:
    """A default server that answers 421 to Host values that are not local or allowed."""
    if "*" in config.allowed_hosts:
        return []
    return [
        block(
            "server",
            body=[
                *listener.directives(default=True),
                directive("server_name", "_"),
                directive("set", "$sockgate_app", NO_APP),
                directive("return", "421", _MISDIRECTED),
            ],
            comment=(
                "Only local names and allowed_hosts reach the apps: a web page that rebinds\n"
                "its own name to 127.0.0.1 still sends its own Host, and lands here."
            ),
        )
    ]


def prefix_server_names(config: Config) -> list[str]:
    """The names of the server that routes by prefix: the local ones, the listen host and
    allowed_hosts, but for those an app's host covers (and *.localhost, with host routes)."""
    names = list(_LOCAL_NAMES)
    host = config.listen.host
    if host not in ("0.0.0.0", "::"):
        names.append(f"[{host}]" if ":" in host else host)
    names += [h for h in config.allowed_hosts if h != "*"]
    hosts = _all_app_hosts(config)
    return [
        name
        for name in dict.fromkeys(names)  # once each: nginx warns about a name said twice
        if not (config.host_routes and _is_local(name)) and not _covered(name.lower(), hosts)
    ]


def host_servers(config: Config, listener: Listener) -> list[Directive]:
    """A server per app with host names, then the one for the *.localhost names of no app."""
    servers = [_app_server(config, listener, app) for app in config.apps if config.app_hosts(app)]
    hosts = _all_app_hosts(config)
    if config.host_routes and not _covered("*" + LOCAL_SUFFIX, hosts):
        servers.append(_unknown_local_server(listener, hosts))
    return servers


def names_hash_bucket_size(config: Config) -> list[Directive]:
    """server_names_hash_bucket_size, when an exact name is too long for nginx's default."""
    names = [*_all_app_hosts(config), *config.allowed_hosts, config.listen.host]
    # An entry takes a pointer and the name (plus two bytes), aligned to a pointer; a bucket
    # ends with a null pointer.
    needed = max(8 + (len(name) + 2 + 7) // 8 * 8 + 8 for name in names)
    size = _BUCKET
    while size < needed:
        size *= 2
    if size == _BUCKET:
        return []
    return [
        directive(
            "server_names_hash_bucket_size",
            str(size),
            comment="A host name too long for nginx's default buckets (64 bytes).",
        )
    ]


def _app_server(config: Config, listener: Listener, app: App) -> Directive:
    names = config.app_hosts(app)
    return block(
        "server",
        body=[
            *listener.directives(),
            directive("server_name", *names),
            block(
                "if",
                "(",
                "$request_uri",
                "~*",
                DOT_SEGMENT,
                ")",
                body=[directive("return", "400")],
                comment=(
                    "A path with dot segments gets 400, as in the built-in engine: proxy_pass\n"
                    "without a URI part passes the path on as the client wrote it, so the app\n"
                    "would get the `..` that nginx resolved only for its own routing."
                ),
            ),
            *app_locations(config, at_own_host(app)),
        ],
        comment=(
            f"app {app.name} at the root of its own origin: every path is the app's, with\n"
            "nothing stripped, rewritten or added for a prefix."
        ),
    )


def _unknown_local_server(listener: Listener, hosts: list[str]) -> Directive:
    listed = ", ".join(hosts) or "none"
    return block(
        "server",
        body=[
            *listener.directives(),
            directive("server_name", "*" + LOCAL_SUFFIX),
            directive("set", "$sockgate_app", NO_APP),
            directive(
                "return", "404", f"404 Not Found: no app has the host $host\napp hosts: {listed}\n"
            ),
        ],
        comment=(
            "Any other *.localhost name is no app's: a typo, or an app not configured. Its 404\n"
            "lists the app hosts. (nginx prefers exact names and longer wildcards to this one.)"
        ),
    )


def _all_app_hosts(config: Config) -> list[str]:
    """Every app's host names, in the order the built-in engine lists them."""
    return [name for name, _ in config.host_pairs()]


def _covered(name: str, hosts: list[str]) -> bool:
    """Whether every Host `name` (a server name: exact, or a `*.` wildcard) stands for goes to
    an app in the built-in engine, which asks the apps' host names before anything else."""
    if name.startswith("~"):
        return False  # a regex: nginx asks the apps' names (exact or wildcard) before it anyway
    return any(name.endswith(host[1:]) if host.startswith("*.") else name == host for host in hosts)


def _is_local(name: str) -> bool:
    """A *.localhost name (or pattern): with host routes, the apps' or no one's."""
    return name.lower().rstrip(".").endswith(LOCAL_SUFFIX)
