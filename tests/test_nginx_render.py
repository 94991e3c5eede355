"""nginx.conf rendering: golden files, refused values, quoting.

Set SOCKGATE_UPDATE_GOLDEN=1 to rewrite the golden files, then read the diff before committing.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sockgate import config as sgconfig
from sockgate.config import App, Config, Listen, Timeouts
from sockgate.errors import ConfigError
from sockgate.http.routing import has_dot_segment
from sockgate.nginx.hosts import DOT_SEGMENT
from sockgate.nginx.render import (
    H2C_OFFER,
    MAX_CLIENTS,
    NGINX_FILES,
    FdLimit,
    connection_limits,
    render,
)
from sockgate.nginx.tree import Directive, block, directive, quote, serialise

GOLDEN = Path(__file__).parent / "golden"
MiB = 1024**2

RICH = Config(
    source=Path("/srv/sg/sockgate.toml"),
    listen=Listen("127.0.0.1", 8099),
    workdir=Path("/srv/sg"),
    timeouts=Timeouts(connect=1.5, read=600, send=90, client_header=30, keepalive=15),
    apps=(
        App("app1", Path("/run/sg/app1.sock"), "/app1/", max_body_size=10 * MiB),
        App("api", Path("/run/sg/api.sock"), "/api/v2/", strip_prefix=False),
        App("home", Path("/run/sg/home.sock"), "/"),
    ),
    max_body_size=1024 * MiB,
)
MINIMAL = Config(
    source=None,
    listen=Listen("127.0.0.1", 8080),
    workdir=Path("/srv/sg"),
    apps=(App("app1", Path("/srv/sg/app1.sock"), "/app1/"),),
)

RICH_TOML = """\
listen = "127.0.0.1:8099"
workdir = "/srv/sg"
max_body_size = "1g"

[timeouts]
connect = "1500ms"
read = "10m"
send = "90s"
client_header = "30s"
keepalive = "15s"

[apps.app1]
socket = "/run/sg/app1.sock"
max_body_size = "10m"

[apps.api]
socket = "/run/sg/api.sock"
prefix = "/api/v2/"
strip_prefix = false

[apps.home]
socket = "/run/sg/home.sock"
prefix = "/"
"""


def assert_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("SOCKGATE_UPDATE_GOLDEN") == "1":
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")


def with_app(config: Config, **changes: Any) -> Config:
    app = dataclasses.replace(config.apps[0], **changes)
    return dataclasses.replace(config, apps=(app, *config.apps[1:]))


# --- golden files -----------------------------------------------------------------------------


def test_rich_config_matches_golden() -> None:
    assert_golden("rich.conf", render(RICH))


def test_minimal_config_as_root_matches_golden() -> None:
    assert_golden("minimal_root.conf", render(MINIMAL, run_as_root=True, user="root:root"))


def test_loading_the_toml_renders_the_same(tmp_path: Path) -> None:
    file = tmp_path / "sockgate.toml"
    file.write_text(RICH_TOML, encoding="utf-8")
    loaded = sgconfig.load(file)
    assert render(dataclasses.replace(loaded, source=RICH.source)) == render(RICH)


# --- what the golden files show, said once more where it matters --------------------------------


def location(text: str, *args: str) -> str:
    """The body of the location block with these arguments."""
    head = re.escape(" ".join(("location", *args)))
    match = re.search(rf"^ +{head} \{{\n(.*?)^ +\}}", text, re.MULTILINE | re.DOTALL)
    assert match, f"no location {args} in:\n{text}"
    return match.group(1)


def test_strip_prefix_puts_a_uri_in_proxy_pass_and_sets_the_prefix_header() -> None:
    body = location(render(RICH), "/app1/")
    assert "proxy_pass http://sockgate_app1/;" in body
    assert "proxy_set_header X-Forwarded-Prefix /app1;" in body


def test_keeping_the_prefix_leaves_the_uri_alone_and_drops_the_prefix_header() -> None:
    body = location(render(RICH), "/api/v2/")
    assert "proxy_pass http://sockgate_api;" in body
    assert 'proxy_set_header X-Forwarded-Prefix "";' in body


def test_the_bare_prefix_redirects_keeping_the_query() -> None:
    body = location(render(RICH), "=", "/app1")
    assert "return 301 /app1/$is_args$args;" in body


def test_a_catch_all_app_gets_no_redirect_and_no_404_location() -> None:
    text = render(RICH)
    assert "proxy_pass http://sockgate_home;" in location(text, "/")
    assert 'location = ""' not in text
    assert "return 404;" not in text


def test_without_a_catch_all_app_other_paths_are_404() -> None:
    assert "return 404;" in location(render(MINIMAL), "/")


def test_body_limits_come_from_the_app_then_the_config_then_unlimited() -> None:
    text = render(RICH)
    assert "client_max_body_size 10m;" in location(text, "/app1/")
    assert "client_max_body_size 1g;" in location(text, "/api/v2/")
    assert "client_max_body_size 0;" in location(render(MINIMAL), "/app1/")


def test_every_path_is_absolute_and_under_workdir_or_a_socket() -> None:
    text = render(RICH)
    paths = re.findall(r"(?<![\w:])/(?:srv|run|var|etc|tmp|usr)\S*", text)
    assert paths
    assert all(p.startswith(("/srv/sg/", "/run/sg/")) for p in paths), paths
    assert "./" not in text


def test_no_user_directive_unless_running_as_root() -> None:
    assert not re.search(r"^user ", render(MINIMAL), re.MULTILINE)
    assert re.search(r"^user root;$", render(MINIMAL, run_as_root=True), re.MULTILINE)
    assert re.search(
        r"^user alice staff;$", render(MINIMAL, run_as_root=True, user="alice:staff"), re.M
    )


def test_quoted_prefix_is_quoted_everywhere_it_appears() -> None:
    text = render(with_app(MINIMAL, prefix="/it's;here/"))
    assert 'location = "/it\'s;here" {' in text
    body = location(text, '"/it\'s;here/"')
    assert 'proxy_set_header X-Forwarded-Prefix "/it\'s;here";' in body


# --- idle connections: slots and descriptors ---------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "expected"),
    [
        (FdLimit(1024, 524288), (2048, 2064)),  # two slots per client, and NGINX_FILES
        (FdLimit(16384, 40000), (32768, 32784)),
        (FdLimit(1024, 2050), (2048, 2050)),  # the files' share cut to the hard limit
        (FdLimit(20000, 20000), (20000, 20000)),  # held to the hard limit, slots too
        (FdLimit(64, 64), (64, 64)),
        (FdLimit(None, None), (2 * MAX_CLIENTS, 2 * MAX_CLIENTS + NGINX_FILES)),
        (FdLimit(1048576, 1048576), (2 * MAX_CLIENTS, 2 * MAX_CLIENTS + NGINX_FILES)),
    ],
)
def test_connection_limits(limit: FdLimit, expected: tuple[int, int]) -> None:
    assert connection_limits(limit) == expected


@given(
    soft=st.integers(1, 2**21),
    extra=st.integers(0, 2**21) | st.none(),
)
def test_connection_limits_hold_what_the_built_in_engine_would(
    soft: int, extra: int | None
) -> None:
    """Never more descriptors than the hard limit, never more slots than descriptors (nginx
    warns then); two slots per client the soft limit allows, as far as the hard limit lets."""
    hard = None if extra is None else soft + extra
    connections, nofile = connection_limits(FdLimit(soft, hard))
    assert hard is None or nofile <= hard
    assert connections <= nofile
    clients = min(soft, MAX_CLIENTS)
    wanted = 2 * clients
    assert connections == (wanted if hard is None else min(wanted, hard))
    assert nofile == (wanted + NGINX_FILES if hard is None else min(wanted + NGINX_FILES, hard))


def test_the_rendered_config_sizes_nginx_from_the_limit_it_is_given() -> None:
    text = render(MINIMAL, fd_limit=FdLimit(20000, 30000))
    assert re.search(r"^worker_rlimit_nofile 30000;$", text, re.MULTILINE)  # main context
    events = re.search(r"^events \{\n(.*?)^\}", text, re.MULTILINE | re.DOTALL)
    assert events
    assert re.search(r"^    worker_connections 30000;$", events.group(1), re.MULTILINE)
    assert "RLIMIT_NOFILE 20000 (hard 30000)" in text
    unlimited = render(MINIMAL, fd_limit=FdLimit(None, None))
    assert f"worker_connections {2 * MAX_CLIENTS};" in unlimited
    assert "RLIMIT_NOFILE unlimited (hard unlimited)" in unlimited
    assert "worker_connections 8192;" in render(MINIMAL, fd_limit=FdLimit(4096, None))


# --- h2c: never an upgrade ---------------------------------------------------------------------


def map_block(text: str, source: str, target: str) -> str:
    match = re.search(
        rf"^ +map {re.escape(source)} {re.escape(target)} \{{\n(.*?)^ +\}}",
        text,
        re.MULTILINE | re.DOTALL,
    )
    assert match, f"no map {source} {target} in:\n{text}"
    return match.group(1)


def test_h2c_is_never_offered_to_the_app() -> None:
    """Upgrade comes from a map that is empty for any offer of h2c, Connection follows it, and
    HTTP2-Settings is never sent (h2c smuggling, issue 17)."""
    text = render(RICH)
    upgrade = map_block(text, "$http_upgrade", "$sockgate_upgrade")
    assert "default $http_upgrade;" in upgrade
    assert re.search(r'^ +"~\*.*h2c.*" "";$', upgrade, re.MULTILINE), upgrade
    connection = map_block(text, "$sockgate_upgrade", "$connection_upgrade")
    assert "default upgrade;" in connection
    for prefix in ("/app1/", "/api/v2/", "/"):
        body = location(text, prefix)
        assert "proxy_set_header Upgrade $sockgate_upgrade;" in body
        assert "proxy_set_header Connection $connection_upgrade;" in body
        assert 'proxy_set_header HTTP2-Settings "";' in body
        assert "$http_upgrade" not in body


@pytest.mark.parametrize(
    ("upgrade", "h2c"),
    [
        ("h2c", True),
        ("H2C", True),
        ("h2c/1", True),
        ("websocket, h2c", True),
        ("h2c,websocket", True),
        ("websocket,\th2c , foo", True),
        ("websocket", False),
        ("h2cx", False),
        ("xh2c", False),
        ("h2", False),
        ("", False),
    ],
)
def test_the_h2c_pattern_matches_an_offer_of_h2c_anywhere_in_the_list(
    upgrade: str, h2c: bool
) -> None:
    """The map's pattern read as PCRE reads it (nginx's `~*`: caseless); these constructs mean
    the same in Python's re."""
    assert H2C_OFFER.startswith("~*")
    assert bool(re.search(H2C_OFFER[2:], upgrade, re.IGNORECASE)) is h2c


# --- apps under a prefix: rewriting and prefix headers -----------------------------------------


def test_rewriting_renders_proxy_redirect_and_proxy_cookie_path() -> None:
    body = location(render(MINIMAL), "/app1/")
    redirects = re.findall(r"^ *proxy_redirect (.*);$", body, re.M)
    assert redirects == [
        '"~^/(?!/|app1(?:[/?#]|$))(.*)$" /app1/$1',
        "http://$http_host/app1 http://$http_host/app1",
        "http://$http_host/ http://$http_host/app1/",
    ]
    assert "proxy_cookie_path ~^/(?!app1(?:/|$))(.*)$ /app1/$1;" in body


def test_prefix_characters_are_literal_in_the_patterns() -> None:
    body = location(render(with_app(MINIMAL, prefix="/a.b+(c)/")), "/a.b+(c)/")
    assert r"(?!/|a\\.b\\+\\(c\\)(?:[/?#]|$))" in body
    assert r"~^/(?!a\\.b\\+\\(c\\)(?:/|$))(.*)$" in body


@pytest.mark.parametrize(
    "changes",
    [{"rewrite": False}, {"strip_prefix": False}, {"prefix": "/"}],
    ids=["rewrite-off", "prefix-kept", "root"],
)
def test_without_rewriting_redirects_pass_unchanged(changes: dict[str, Any]) -> None:
    text = render(with_app(MINIMAL, **changes))
    body = location(text, with_app(MINIMAL, **changes).apps[0].prefix)
    assert re.findall(r"^ *proxy_redirect (.*);$", body, re.M) == ["off"]
    assert "proxy_cookie_path" not in body


def test_prefix_headers_are_the_configured_ones_and_the_others_emptied() -> None:
    body = location(render(with_app(MINIMAL, prefix_headers=("X-Mount",))), "/app1/")
    assert "proxy_set_header X-Mount /app1;" in body
    assert 'proxy_set_header X-Forwarded-Prefix "";' in body
    assert 'proxy_set_header X-Script-Name "";' in body


def test_a_kept_prefix_empties_every_prefix_header() -> None:
    config = with_app(MINIMAL, strip_prefix=False, prefix_headers=("X-Mount",))
    body = location(render(config), "/app1/")
    for name in ("X-Mount", "X-Forwarded-Prefix", "X-Script-Name"):
        assert f'proxy_set_header {name} "";' in body


# --- host routes: each app at the root of its own origin ----------------------------------------

HOSTED = dataclasses.replace(
    MINIMAL,
    apps=(
        *MINIMAL.apps,
        App("Notes", Path("/srv/sg/notes.sock"), "/n/", hosts=("notes.test", "*.notes.localhost")),
    ),
)


def servers(text: str) -> dict[str, str]:
    """The http block's server blocks by their server_name arguments."""
    found = re.findall(r"^    server \{\n(.*?)^    \}", text, re.MULTILINE | re.DOTALL)
    named = {}
    for body in found:
        match = re.search(r"^        server_name (.*);$", body, re.MULTILINE)
        assert match, body
        named[match.group(1)] = body
    return named


def prefix_names(text: str) -> list[str]:
    """The server_name arguments of the server that routes by prefix."""
    return next(
        name for name, body in servers(text).items() if "location = /app1 {" in body
    ).split()


def test_each_app_is_served_at_the_root_of_its_host_names() -> None:
    named = servers(render(HOSTED))
    own = named["app1.localhost"]
    # The app's one location takes every path as is: the host route's, not the prefix's.
    assert "location / {" in own
    assert "location /app1/" not in own
    assert "proxy_pass http://sockgate_app1;" in own
    assert 'proxy_set_header X-Forwarded-Prefix "";' in own
    assert "proxy_set_header X-Forwarded-Host $sockgate_host;" in own
    assert "proxy_redirect off;" in own
    assert "proxy_cookie_path" not in own
    # NAME.localhost in lower case, then the names of `hosts`, a pattern as nginx's wildcard.
    notes = named["notes.localhost notes.test *.notes.localhost"]
    assert "proxy_pass http://sockgate_Notes;" in notes
    assert "set $sockgate_app Notes;" in notes
    # The proxy settings are the http block's, inherited by every server: written once.
    text = render(HOSTED)
    assert text.count("proxy_read_timeout") == 1
    assert re.search(r"^    proxy_read_timeout 1h;$", text, re.MULTILINE)


def test_dot_segments_are_refused_at_an_apps_host() -> None:
    own = servers(render(HOSTED))["app1.localhost"]
    assert f'if ( $request_uri ~* "{DOT_SEGMENT}" ) {{\n            return 400;' in own


@pytest.mark.parametrize(
    "target",
    [
        "/", "/a/../b", "/..", "/.", "/a/.", "/a/..?q", "/a/%2e%2E/b", "/a%2f..%2fb", "/%2E/",
        "/a/.b", "/a/...", "/a/b..", "/a?x=/../", "/a/.%2e", "/a/..%2f", "/a.b/c",
    ],
)  # fmt: skip
def test_the_dot_segment_pattern_is_the_built_in_engines_rule(target: str) -> None:
    # PCRE and Python's re read this pattern the same way.
    refused = re.search(DOT_SEGMENT, target, re.IGNORECASE) is not None
    assert refused == has_dot_segment(target.partition("?")[0].encode())


@given(st.text(alphabet="/.%2eEfF?a", max_size=12).map(lambda rest: "/" + rest))
def test_the_dot_segment_pattern_agrees_on_any_target(target: str) -> None:
    refused = re.search(DOT_SEGMENT, target, re.IGNORECASE) is not None
    assert refused == has_dot_segment(target.partition("?")[0].encode())


def test_unknown_localhost_names_get_a_404_listing_the_app_hosts() -> None:
    text = render(HOSTED)
    unknown = servers(text)["*.localhost"]
    assert "set $sockgate_app -;" in unknown
    assert (
        'return 404 "404 Not Found: no app has the host $host\\napp hosts: app1.localhost, '
        'notes.localhost, notes.test, *.notes.localhost\\n";'
    ) in unknown
    # The other local names are routed by prefix; the 421 guard stays the default server.
    assert prefix_names(text) == [
        "localhost",
        r'"~^127\\.\\d+\\.\\d+\\.\\d+$"',
        "[::1]",
        "127.0.0.1",
    ]
    assert "listen 127.0.0.1:8080 default_server;" in servers(text)["_"]


def test_host_routes_off_renders_no_host_servers() -> None:
    text = render(dataclasses.replace(MINIMAL, host_routes=False))
    assert set(servers(text)) == {
        "_",
        r'localhost *.localhost "~^127\\.\\d+\\.\\d+\\.\\d+$" [::1] 127.0.0.1',
    }
    assert "no app has the host" not in text
    # An app's own `hosts` are still its names; *.localhost stays the prefix server's.
    named = servers(render(dataclasses.replace(HOSTED, host_routes=False)))
    assert "notes.test *.notes.localhost" in named
    assert "app1.localhost" not in named
    assert not any(name == "*.localhost" for name in named)


def test_names_an_app_host_covers_leave_the_prefix_server() -> None:
    """nginx prefers an exact name to a wildcard, and a longer wildcard to a shorter one; the
    built-in engine asks the apps' names first. So an allowed name an app's host covers is the
    app's, and with host routes every *.localhost name is an app's or gets the 404."""
    allowed = (
        "x.test",
        "*.a.test",
        "other.example",
        "*.example",
        "dev.localhost",
        "*.dev.localhost",
    )
    config = dataclasses.replace(with_app(MINIMAL, hosts=("*.test",)), allowed_hosts=allowed)
    assert prefix_names(render(config))[-3:] == ["127.0.0.1", "other.example", "*.example"]
    off = dataclasses.replace(config, host_routes=False)
    assert prefix_names(render(off))[-5:] == [
        "127.0.0.1",
        "other.example",
        "*.example",
        "dev.localhost",
        "*.dev.localhost",
    ]
    assert "*.localhost" in prefix_names(render(off))


def test_an_app_that_takes_every_localhost_name_leaves_no_404_server() -> None:
    named = servers(render(with_app(MINIMAL, hosts=("*.localhost",))))
    assert "app1.localhost *.localhost" in named
    assert not any("no app has the host" in body for body in named.values())


def test_long_host_names_get_bigger_hash_buckets() -> None:
    # 46 characters fit nginx's default 64-byte buckets (an entry: a pointer, the name and two
    # bytes, aligned to 8, then the bucket's closing pointer), 47 do not.
    assert "server_names_hash_bucket_size" not in render(
        with_app(MINIMAL, hosts=("a" * 41 + ".test",))
    )
    text = render(with_app(MINIMAL, hosts=("a" * 42 + ".test",)))
    assert re.search(r"^    server_names_hash_bucket_size 128;$", text, re.MULTILINE)
    longer = ".".join(["a" * 63] * 3) + ".test"  # 196 characters
    assert "server_names_hash_bucket_size 256;" in render(with_app(MINIMAL, hosts=(longer,)))


# --- refused values ----------------------------------------------------------------------------


@pytest.mark.parametrize("char", [";", "{", "}", '"', "'", " ", "\t", "\n", "$", "\\", "#"])
def test_socket_path_with_nginx_syntax_is_refused(char: str) -> None:
    socket = Path(f"/run/sg/a{char}b.sock")
    with pytest.raises(ConfigError) as caught:
        render(with_app(MINIMAL, socket=socket))
    assert caught.value.key == "apps.app1.socket"
    assert repr(str(socket)) in str(caught.value)


def test_non_utf8_socket_path_is_refused() -> None:
    socket = Path(os.fsdecode(b"/run/sg/\xff.sock"))
    with pytest.raises(ConfigError, match="UTF-8") as caught:
        render(with_app(MINIMAL, socket=socket))
    assert caught.value.key == "apps.app1.socket"


def test_relative_socket_path_is_refused() -> None:
    with pytest.raises(ConfigError, match="absolute") as caught:
        render(with_app(MINIMAL, socket=Path("run/app1.sock")))
    assert caught.value.key == "apps.app1.socket"


def test_workdir_with_a_space_is_refused_and_the_error_names_the_file() -> None:
    config = dataclasses.replace(RICH, workdir=Path("/srv/my sg"))
    with pytest.raises(ConfigError) as caught:
        render(config)
    assert caught.value.key == "workdir"
    assert str(caught.value).startswith("/srv/sg/sockgate.toml: workdir: '/srv/my sg'")


def test_prefix_with_a_dollar_is_refused() -> None:
    # '$' is a valid prefix character, but nginx would expand it in `return` and the header.
    with pytest.raises(ConfigError, match="variable") as caught:
        render(with_app(MINIMAL, prefix="/a$b/"))
    assert caught.value.key == "apps.app1.prefix"


@pytest.mark.parametrize("host", ["a;b", "*", "host{", "-x"])
def test_listen_host_nginx_cannot_take_is_refused(host: str) -> None:
    with pytest.raises(ConfigError) as caught:
        render(dataclasses.replace(MINIMAL, listen=Listen(host, 8080)))
    assert caught.value.key == "listen"


def test_app_names_differing_only_in_case_are_refused() -> None:
    apps = (App("web", Path("/run/a.sock"), "/a/"), App("Web", Path("/run/b.sock"), "/b/"))
    with pytest.raises(ConfigError, match="only in case") as caught:
        render(dataclasses.replace(MINIMAL, apps=apps))
    assert caught.value.key == "apps.Web"


@pytest.mark.parametrize("user", ["", "root;", "root:", "a b", "root:wheel:x"])
def test_bad_user_is_refused(user: str) -> None:
    with pytest.raises(ValueError, match="user name"):
        render(MINIMAL, run_as_root=True, user=user)


# --- the tree and its quoting ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("abc", "abc"),
        ("/run/sg/app1.sock", "/run/sg/app1.sock"),
        ("$http_host", "$http_host"),
        ("/app1/$is_args$args", "/app1/$is_args$args"),
        ("café", "café"),
        ("a#b", '"a#b"'),
        ("", '""'),
        ("a b", '"a b"'),
        ("a;b", '"a;b"'),
        ("{", '"{"'),
        ("}", '"}"'),
        ("#x", '"#x"'),
        ('say "hi"', "'say \"hi\"'"),
        ("it's", '"it\'s"'),
        ('it\'s "x"', '"it\'s \\"x\\""'),
        ("a\\b", '"a\\\\b"'),
        ("a\tb\nc\rd", '"a\\tb\\nc\\rd"'),
        ("\x01", '"\x01"'),
    ],
)
def test_quote(arg: str, expected: str) -> None:
    assert quote(arg) == expected


def test_quote_refuses_nul() -> None:
    with pytest.raises(ValueError, match="NUL"):
        quote("a\0b")


def nginx_token(text: str) -> str:
    """Read `text` back as nginx's lexer (ngx_conf_read_token) reads one argument."""
    if text[:1] not in ("'", '"'):
        assert not re.search(r"[\s;{}\"']", text), text
        return text
    mark, out, i = text[0], [], 1
    while text[i] != mark:
        if text[i] == "\\" and text[i + 1] in "\"'\\tnr":
            out.append({"t": "\t", "n": "\n", "r": "\r"}.get(text[i + 1], text[i + 1]))
            i += 2
        else:
            out.append(text[i])
            i += 1
    assert i == len(text) - 1, f"text after the closing quote: {text!r}"
    return "".join(out)


@given(st.text(alphabet=st.characters(exclude_characters="\0")))
def test_quote_round_trips_through_nginx_lexing(arg: str) -> None:
    assert nginx_token(quote(arg)) == arg


def test_serialise_nests_blocks_and_places_comments() -> None:
    tree = [
        directive("worker_processes", "1"),
        directive("pid", "/a b/nginx.pid", comment="why:\ntwo lines"),
        block(
            "http",
            body=[
                directive("proxy_set_header", "Host", "$http_host", comment="keep the port"),
                directive("proxy_set_header", "X-Empty", ""),
                block("map", "$a", "$b", body=[directive("", "")]),
            ],
        ),
        Directive("empty", block=()),
    ]
    assert serialise(tree) == (
        "worker_processes 1;\n"
        "\n"
        "# why:\n"
        "# two lines\n"
        'pid "/a b/nginx.pid";\n'
        "\n"
        "http {\n"
        "    # keep the port\n"
        "    proxy_set_header Host $http_host;\n"
        '    proxy_set_header X-Empty "";\n'
        "\n"
        "    map $a $b {\n"
        '        "" "";\n'
        "    }\n"
        "}\n"
        "\n"
        "empty {\n"
        "}\n"
    )
