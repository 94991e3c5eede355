"""config.load(): defaults, path resolution, overrides, and errors that say where and what."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sockgate.config import (
    DEFAULT_LISTEN,
    MAX_SOCKET_PATH,
    App,
    Config,
    Listen,
    Timeouts,
    load,
)
from sockgate.errors import ConfigError

APP = '[apps.app1]\nsocket = "app1.sock"\n'


def write(tmp_path: Path, text: str, name: str = "sockgate.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_text(tmp_path: Path, text: str, **overrides: object) -> Config:
    return load(write(tmp_path, text), **overrides)  # type: ignore[arg-type]


def load_error(tmp_path: Path, text: str, **overrides: object) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(path, **overrides)  # type: ignore[arg-type]
    return info.value


def after_key(error: ConfigError) -> str:
    """The message after "FILE: KEY: ", so checks for values do not match the temp path."""
    text = str(error)
    marker = f"{error.key}: " if error.key else f"{error.source}: "
    assert marker in text, text
    return text.split(marker, 1)[1]


# --- defaults and paths -----------------------------------------------------------------------


def test_defaults(tmp_path: Path) -> None:
    config = load_text(tmp_path, APP)
    assert config.source == (tmp_path / "sockgate.toml").resolve()
    assert config.listen == Listen("127.0.0.1", 8080)
    assert str(config.listen) == DEFAULT_LISTEN == "127.0.0.1:8080"
    assert config.workdir == tmp_path.resolve()
    assert config.timeouts == Timeouts()
    assert config.timeouts.connect == 5.0
    assert config.timeouts.read == 3600.0
    assert config.timeouts.send == 3600.0
    assert config.timeouts.client_header == 60.0
    assert config.timeouts.keepalive == 75.0
    assert config.engine == "builtin"
    assert config.max_body_size is None
    (app,) = config.apps
    assert app.name == "app1"
    assert app.prefix == "/app1/"
    assert app.mount == "/app1"
    assert app.strip_prefix is True
    assert app.max_body_size is None


def test_log_and_pid_paths_live_under_workdir(tmp_path: Path) -> None:
    config = load_text(tmp_path, 'workdir = "w"\n' + APP)
    workdir = (tmp_path / "w").resolve()
    assert config.workdir == workdir
    assert config.access_log == workdir / "logs" / "access.log"
    assert config.error_log == workdir / "logs" / "error.log"
    assert config.pid_file == workdir / "sockgate.pid"


def test_full_file(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        'listen = "[::1]:9000"\nengine = "nginx"\nmax_body_size = "10m"\n'
        '[timeouts]\nconnect = "500ms"\nread = "1h30m"\nsend = 90\n'
        'client_header = "60s"\nkeepalive = "5m"\nshutdown = 2.5\n'
        '[apps.api]\nsocket = "/run/api.sock"\nprefix = "/api/v2/"\nstrip_prefix = false\n'
        'max_body_size = "1k"\n'
        '[apps.root]\nsocket = "/run/root.sock"\nprefix = "/"\n',
    )
    assert config.listen == Listen("::1", 9000)
    assert config.engine == "nginx"
    assert config.max_body_size == 10 * 1024**2
    assert config.timeouts == Timeouts(
        connect=0.5, read=5400, send=90, client_header=60, keepalive=300, shutdown=2.5
    )
    assert config.apps == (
        App("api", Path("/run/api.sock"), "/api/v2/", strip_prefix=False, max_body_size=1024),
        App("root", Path("/run/root.sock"), "/"),
    )
    assert config.apps[1].mount == ""


def test_config_is_frozen(tmp_path: Path) -> None:
    config = load_text(tmp_path, APP)
    with pytest.raises(AttributeError):
        config.listen = Listen("0.0.0.0", 1)  # type: ignore[misc]
    with pytest.raises(AttributeError):
        config.apps[0].prefix = "/x/"  # type: ignore[misc]
    assert isinstance(config.apps, tuple)


def test_relative_socket_and_workdir_resolve_against_the_file_not_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    path = write(conf_dir, 'workdir = "work"\n[apps.a]\nsocket = "run/a.sock"\n')
    config = load(path)
    assert config.workdir == (conf_dir / "work").resolve()
    assert config.apps[0].socket == (conf_dir / "run" / "a.sock").resolve()


def test_relative_config_path_is_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, APP, name="other.toml")
    monkeypatch.chdir(tmp_path)
    config = load("other.toml")
    assert config.source == (tmp_path / "other.toml").resolve()
    assert config.apps[0].socket == (tmp_path / "app1.sock").resolve()


def test_default_file_in_cwd_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, 'listen = "127.0.0.1:9999"\n' + APP)
    monkeypatch.chdir(tmp_path)
    config = load()
    assert config.listen.port == 9999
    assert config.source == (tmp_path / "sockgate.toml").resolve()


def test_tilde_expands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    config = load_text(tmp_path, 'workdir = "~/w"\n[apps.a]\nsocket = "~/app1/sock.sock"\n')
    assert config.workdir == (home / "w").resolve()
    assert config.apps[0].socket == (home / "app1" / "sock.sock").resolve()


def test_socket_path_of_exactly_107_bytes_is_accepted(tmp_path: Path) -> None:
    base = str(tmp_path.resolve())
    name = "s" * (MAX_SOCKET_PATH - len(base) - 1)
    socket = f"{base}/{name}"
    assert len(os.fsencode(socket)) == MAX_SOCKET_PATH == 107
    config = load_text(tmp_path, f'[apps.a]\nsocket = "{socket}"\n')
    assert str(config.apps[0].socket) == socket


def test_socket_path_of_108_bytes_is_refused(tmp_path: Path) -> None:
    base = str(tmp_path.resolve())
    socket = f"{base}/{'s' * (MAX_SOCKET_PATH - len(base))}"
    assert len(os.fsencode(socket)) == 108
    error = load_error(tmp_path, f'[apps.a]\nsocket = "{socket}"\n')
    assert error.key == "apps.a.socket"
    assert socket in str(error)
    assert "108" in after_key(error)
    assert "107" in after_key(error)


def test_relative_socket_path_is_measured_after_resolving(tmp_path: Path) -> None:
    # Short in the file, long once resolved against the file's directory.
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    error = load_error(deep, '[apps.a]\nsocket = "a.sock"\n')
    assert error.key == "apps.a.socket"
    assert str((deep / "a.sock").resolve()) in str(error)


def test_file_without_apps_is_valid(tmp_path: Path) -> None:
    assert load_text(tmp_path, 'listen = "127.0.0.1:8080"\n').apps == ()


def test_missing_socket_file_is_not_a_config_error(tmp_path: Path) -> None:
    config = load_text(tmp_path, '[apps.a]\nsocket = "/nonexistent/dir/a.sock"\n')
    assert config.apps[0].socket == Path("/nonexistent/dir/a.sock")


# --- errors: file, dotted key, bad value, expectation -----------------------------------------


BAD_VALUES = {
    "listen-int": ("listen = 8080\n" + APP, "listen", "8080", "expected a string"),
    "strip-prefix-str": (
        '[apps.app1]\nsocket = "a.sock"\nstrip_prefix = "yes"\n',
        "apps.app1.strip_prefix",
        "'yes'",
        "true or false",
    ),
    "app-not-table": ("apps.x = 3\n", "apps.x", "3", "expected a table"),
    "apps-not-table": ('apps = "x"\n', "apps", "'x'", "expected a table"),
    "timeouts-not-table": ('timeouts = "5s"\n' + APP, "timeouts", "'5s'", "expected a table"),
    "socket-int": ("[apps.app1]\nsocket = 5\n", "apps.app1.socket", "5", "expected a string"),
    "socket-empty": ('[apps.app1]\nsocket = ""\n', "apps.app1.socket", "''", "expected a path"),
    "prefix-int": (
        '[apps.app1]\nsocket = "a.sock"\nprefix = 1\n',
        "apps.app1.prefix",
        "1",
        "string",
    ),
    "duration-unit": ('[timeouts]\nread = "5x"\n' + APP, "timeouts.read", "'5x'", "duration"),
    "duration-space": (
        '[timeouts]\nconnect = "1h 30m"\n' + APP,
        "timeouts.connect",
        "'1h 30m'",
        "duration",
    ),
    "duration-negative": ("[timeouts]\nsend = -1\n" + APP, "timeouts.send", "-1", "non-negative"),
    "duration-bool": (
        "[timeouts]\nkeepalive = true\n" + APP,
        "timeouts.keepalive",
        "True",
        "boolean",
    ),
    "timeout-zero-str": (
        '[timeouts]\nread = "0s"\n' + APP,
        "timeouts.read",
        "'0s'",
        "greater than",
    ),
    "timeout-zero-num": (
        "[timeouts]\nclient_header = 0.0\n" + APP,
        "timeouts.client_header",
        "0.0",
        "greater than",
    ),
    "size": ('max_body_size = "lots"\n' + APP, "max_body_size", "'lots'", "size"),
    "app-size": (
        '[apps.app1]\nsocket = "a.sock"\nmax_body_size = "1.5m"\n',
        "apps.app1.max_body_size",
        "'1.5m'",
        "size",
    ),
    "engine": ('engine = "apache"\n' + APP, "engine", "'apache'", "builtin, nginx"),
    "rewrite-str": (APP + 'rewrite = "yes"\n', "apps.app1.rewrite", "'yes'", "true or false"),
    "hold": (APP + 'hold = "soon"\n', "apps.app1.hold", "'soon'", "duration"),
    "prefix-headers-str": (
        APP + 'prefix_headers = "X-Script-Name"\n',
        "apps.app1.prefix_headers",
        "'X-Script-Name'",
        "expected an array of header names",
    ),
    "prefix-headers-int": (
        APP + "prefix_headers = [1]\n",
        "apps.app1.prefix_headers",
        "1",
        "expected a header name",
    ),
    "prefix-headers-bad-name": (
        APP + 'prefix_headers = ["X Prefix"]\n',
        "apps.app1.prefix_headers",
        "'X Prefix'",
        "letters, digits and '-'",
    ),
    "prefix-headers-underscore": (
        APP + 'prefix_headers = ["SCRIPT_NAME"]\n',
        "apps.app1.prefix_headers",
        "'SCRIPT_NAME'",
        "letters, digits and '-'",
    ),
    "prefix-headers-empty-name": (
        APP + 'prefix_headers = [""]\n',
        "apps.app1.prefix_headers",
        "''",
        "expected a header name",
    ),
    "prefix-headers-twice": (
        APP + 'prefix_headers = ["X-Script-Name", "x-script-name"]\n',
        "apps.app1.prefix_headers",
        "'x-script-name'",
        "once",
    ),
    "listen-no-port": ('listen = "1.2.3.4"\n' + APP, "listen", "'1.2.3.4'", "HOST:PORT"),
    "listen-bad-v6-chars": ('listen = "[zz]:80"\n' + APP, "listen", "'[zz]:80'", "[IPV6]:PORT"),
    "listen-bad-v6": ('listen = "[1::2::3]:80"\n' + APP, "listen", "'[1::2::3]:80'", "IPv6"),
    "listen-port-range": (
        'listen = "127.0.0.1:70000"\n' + APP,
        "listen",
        "'127.0.0.1:70000'",
        "65535",
    ),
    "listen-bare-v6": ('listen = "::1:80"\n' + APP, "listen", "'::1:80'", "[IPV6]:PORT"),
    "listen-empty": ('listen = ""\n' + APP, "listen", "''", "HOST:PORT"),
    "listen-host-only": ('listen = "localhost"\n' + APP, "listen", "'localhost'", "HOST:PORT"),
}


@pytest.mark.parametrize(
    ("text", "key", "value", "expectation"), BAD_VALUES.values(), ids=BAD_VALUES.keys()
)
def test_errors_name_file_key_value_and_expectation(
    tmp_path: Path, text: str, key: str, value: str, expectation: str
) -> None:
    error = load_error(tmp_path, text)
    file = str(tmp_path / "sockgate.toml")
    assert error.source == file
    assert error.key == key
    message = str(error)
    assert message.startswith(f"{file}: {key}: "), message
    rest = after_key(error)
    assert value in rest, message
    assert expectation in rest, message


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("bogus = 1\n" + APP, "bogus"),
        ('[apps.app1]\nsocket = "a.sock"\nsokcet = 1\n', "apps.app1.sokcet"),
        ('[timeouts]\nconect = "5s"\n' + APP, "timeouts.conect"),
    ],
)
def test_unknown_keys(tmp_path: Path, text: str, key: str) -> None:
    error = load_error(tmp_path, text)
    file = str(tmp_path / "sockgate.toml")
    assert error.source == file
    assert error.key == key
    assert str(error).startswith(f"{file}: {key}: unknown key (expected one of: ")


def test_unknown_key_lists_what_is_expected(tmp_path: Path) -> None:
    rest = after_key(load_error(tmp_path, '[timeouts]\nfoo = "1s"\n' + APP))
    for name in ("connect", "read", "send", "client_header", "keepalive"):
        assert name in rest


@pytest.mark.parametrize(
    "prefix",
    [
        "app1/",  # must start with '/'
        "/app1",  # must end with '/'
        "",
        "app1",
        "/a/../",
        "/../",
        "/a/./",
        "/./",
        "/a//",
        "//",
        "/a//b/",
        "/a%20b/",
        "/%2e%2e/",
        "/a b/",
        "/a?b/",
        "/a#b/",
        '/a"b/',
    ],
)
def test_bad_prefixes(tmp_path: Path, prefix: str) -> None:
    escaped = prefix.replace("\\", "\\\\").replace('"', '\\"')
    error = load_error(tmp_path, f'[apps.app1]\nsocket = "a.sock"\nprefix = "{escaped}"\n')
    assert error.key == "apps.app1.prefix"
    rest = after_key(error)
    assert repr(prefix) in rest
    assert "starts and ends with '/'" in rest


@pytest.mark.parametrize(
    "prefix", ["/", "/a/", "/a.b/", "/..a/", "/a../", "/v1/api-x_y~z/", "/@:/"]
)
def test_good_prefixes(tmp_path: Path, prefix: str) -> None:
    config = load_text(tmp_path, f'[apps.app1]\nsocket = "a.sock"\nprefix = "{prefix}"\n')
    assert config.apps[0].prefix == prefix


def test_two_apps_with_the_same_prefix(tmp_path: Path) -> None:
    error = load_error(
        tmp_path,
        '[apps.one]\nsocket = "1.sock"\nprefix = "/x/"\n'
        '[apps.two]\nsocket = "2.sock"\nprefix = "/x/"\n',
    )
    assert error.key == "apps.two.prefix"
    rest = after_key(error)
    assert "'/x/'" in rest
    assert "'one'" in rest


def test_default_prefix_collides_with_an_explicit_one(tmp_path: Path) -> None:
    error = load_error(
        tmp_path, '[apps.x]\nsocket = "1.sock"\n[apps.y]\nsocket = "2.sock"\nprefix = "/x/"\n'
    )
    assert error.key == "apps.y.prefix"


def test_missing_socket(tmp_path: Path) -> None:
    error = load_error(tmp_path, '[apps.app1]\nprefix = "/a/"\n')
    assert error.key == "apps.app1.socket"
    assert "missing" in after_key(error)


@pytest.mark.parametrize("name", ["bad name", "-a", ".a", "a/b", "é", "a:b"])
def test_bad_app_names(tmp_path: Path, name: str) -> None:
    error = load_error(tmp_path, f'[apps."{name}"]\nsocket = "a.sock"\n')
    assert error.key == f"apps.{name}"
    rest = after_key(error)
    assert repr(name) in rest
    assert "letters, digits" in rest


@pytest.mark.parametrize("name", ["a", "A1", "my_app", "my-app", "v1.2", "0"])
def test_good_app_names(tmp_path: Path, name: str) -> None:
    config = load_text(tmp_path, f'[apps."{name}"]\nsocket = "a.sock"\n')
    assert config.apps[0].name == name
    assert config.apps[0].prefix == f"/{name}/"


def test_invalid_toml(tmp_path: Path) -> None:
    error = load_error(tmp_path, "listen = \n")
    file = str(tmp_path / "sockgate.toml")
    assert error.source == file
    assert str(error).startswith(f"{file}: ")
    assert "TOML" in str(error)
    assert "line 1" in str(error)


def test_missing_file_given_with_c(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load(path)
    assert info.value.source == str(path)
    assert str(path) in str(info.value)
    assert "not found" in str(info.value)


def test_missing_file_given_with_c_even_with_apps(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load(tmp_path / "nope.toml", apps=["a=/x.sock"])


def test_no_file_and_no_apps_suggests_init(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load()
    message = str(info.value)
    assert "sockgate init" in message
    assert "sockgate.toml" in message
    assert "--app" in message


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path)
    assert info.value.source == str(tmp_path)


# --- command-line overrides -------------------------------------------------------------------


def test_apps_without_a_file_use_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load(apps=["a=/x.sock", "b=rel/b.sock"])
    assert config.source is None
    assert config.workdir == tmp_path.resolve()
    assert config.listen == Listen("127.0.0.1", 8080)
    assert config.apps == (
        App("a", Path("/x.sock"), "/a/"),
        App("b", (tmp_path / "rel" / "b.sock").resolve(), "/b/"),
    )


def test_app_override_adds_and_replaces(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        '[apps.app1]\nsocket = "app1.sock"\n[apps.keep]\nsocket = "keep.sock"\n',
        apps=["app1=/new/app1.sock", "extra=/e.sock"],
    )
    by_name = {app.name: app for app in config.apps}
    assert set(by_name) == {"app1", "keep", "extra"}
    assert by_name["app1"].socket == Path("/new/app1.sock")
    assert by_name["keep"].socket == (tmp_path / "keep.sock").resolve()
    assert by_name["extra"].prefix == "/extra/"
    assert config.source == (tmp_path / "sockgate.toml").resolve()


def test_listen_and_engine_overrides(tmp_path: Path) -> None:
    config = load_text(
        tmp_path, 'listen = "127.0.0.1:1"\n' + APP, listen="[::1]:9000", engine="nginx"
    )
    assert config.listen == Listen("::1", 9000)
    assert config.engine == "nginx"
    assert config.apps[0].name == "app1"


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"listen": "nope"}, "--listen"),
        ({"listen": "127.0.0.1:99999"}, "--listen"),
        ({"engine": "apache"}, "--engine"),
    ],
)
def test_bad_overrides_name_the_option(tmp_path: Path, overrides: dict[str, str], key: str) -> None:
    error = load_error(tmp_path, APP, **overrides)
    assert error.key == key
    assert repr(next(iter(overrides.values()))) in str(error)


@pytest.mark.parametrize("spec", ["app1", "=x.sock", "app1=", ""])
def test_bad_app_spec(spec: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load(apps=[spec])
    assert "NAME=SOCKET" in str(info.value)
    assert repr(spec) in str(info.value)


def test_app_override_is_validated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="letters, digits"):
        load(apps=["bad name=/x.sock"])
    with pytest.raises(ConfigError, match="107"):
        load(apps=["a=/" + "x" * 120])


def test_app_override_with_a_taken_prefix(tmp_path: Path) -> None:
    error = load_error(
        tmp_path, '[apps.one]\nsocket = "1.sock"\nprefix = "/two/"\n', apps=["two=/t.sock"]
    )
    assert "'/two/'" in str(error)


# --- listen -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "listen"),
    [
        ("127.0.0.1:8080", Listen("127.0.0.1", 8080)),
        ("[::1]:9000", Listen("::1", 9000)),
        ("localhost:8080", Listen("localhost", 8080)),
        ("0.0.0.0:80", Listen("0.0.0.0", 80)),
        ("127.0.0.1:0", Listen("127.0.0.1", 0)),
        ("127.0.0.1:65535", Listen("127.0.0.1", 65535)),
        ("[::]:1", Listen("::", 1)),
        (" 127.0.0.1:8080 ", Listen("127.0.0.1", 8080)),
    ],
)
def test_listen_parsing(tmp_path: Path, text: str, listen: Listen) -> None:
    body = f'listen = "{text}"\nallow_remote = true\n' + APP
    assert load_text(tmp_path, body).listen == listen


@pytest.mark.parametrize("text", ["0.0.0.0:80", "[::]:8080", "192.168.1.5:8080"])
def test_non_loopback_listen_needs_allow_remote(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match=r"listen: .*not a loopback address.*allow_remote = true"):
        load_text(tmp_path, f'listen = "{text}"\n' + APP)


def test_listen_override_to_the_network_needs_allow_remote(tmp_path: Path) -> None:
    path = tmp_path / "sockgate.toml"
    path.write_text(APP)
    with pytest.raises(ConfigError, match="allow_remote"):
        load(path, listen="0.0.0.0:8080")
    path.write_text("allow_remote = true\n" + APP)
    assert load(path, listen="0.0.0.0:8080").allow_remote


@pytest.mark.parametrize(
    "bad", ['"localhost"', "[1]", '["a b"]', '["evil.example/x"]', '["**.x"]', '[""]']
)
def test_allowed_hosts_is_validated(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError, match="allowed_hosts"):
        load_text(tmp_path, f"allowed_hosts = {bad}\n" + APP)


def test_allowed_hosts_are_kept(tmp_path: Path) -> None:
    body = 'allowed_hosts = ["myhost.example", "*.example.test", "[fd00::1]", "*"]\n' + APP
    assert load_text(tmp_path, body).allowed_hosts == (
        "myhost.example",
        "*.example.test",
        "[fd00::1]",
        "*",
    )


@pytest.mark.parametrize(
    ("listen", "text"),
    [
        (Listen("127.0.0.1", 8080), "127.0.0.1:8080"),
        (Listen("::1", 9000), "[::1]:9000"),
        (Listen("localhost", 1), "localhost:1"),
    ],
)
def test_listen_str(listen: Listen, text: str) -> None:
    assert str(listen) == text


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("10.0.0.1", False),
        ("example.com", False),
    ],
)
def test_listen_is_loopback(host: str, loopback: bool) -> None:
    assert Listen(host, 8080).is_loopback is loopback


# --- body_limit -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("global_limit", "app_limit", "expected"),
    [
        (None, None, None),
        (100, None, 100),
        (None, 50, 50),
        (100, 50, 50),
        (100, 500, 500),  # the app's own limit wins, even when larger
        (100, 0, None),  # 0 for an app: no limit for it
        (0, None, None),  # 0 globally: no limit
    ],
)
def test_body_limit(global_limit: int | None, app_limit: int | None, expected: int | None) -> None:
    app = App("a", Path("/a.sock"), "/a/", max_body_size=app_limit)
    config = Config(
        source=None,
        listen=Listen("127.0.0.1", 8080),
        workdir=Path("/w"),
        apps=(app,),
        max_body_size=global_limit,
    )
    assert config.body_limit(app) == expected


def test_body_limit_from_file(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        'max_body_size = "10m"\n'
        '[apps.small]\nsocket = "s.sock"\nmax_body_size = "1k"\n'
        '[apps.plain]\nsocket = "p.sock"\n',
    )
    small, plain = config.apps
    assert config.body_limit(small) == 1024
    assert config.body_limit(plain) == 10 * 1024**2


# --- apps under a prefix: rewrite and prefix_headers ------------------------------------------


def test_rewrite_and_prefix_headers_defaults(tmp_path: Path) -> None:
    (app,) = load_text(tmp_path, APP).apps
    assert app.rewrite is True
    assert app.prefix_headers == ("X-Forwarded-Prefix", "X-Script-Name")
    assert app.prefixed
    assert app.rewrites


def test_rewrite_and_prefix_headers_are_read(tmp_path: Path) -> None:
    text = APP + 'rewrite = false\nprefix_headers = ["X-Script-Name", "X-Forwarded-Path"]\n'
    (app,) = load_text(tmp_path, text).apps
    assert app.rewrite is False
    assert not app.rewrites
    assert app.prefix_headers == ("X-Script-Name", "X-Forwarded-Path")


def test_empty_prefix_headers_sends_none(tmp_path: Path) -> None:
    (app,) = load_text(tmp_path, APP + "prefix_headers = []\n").apps
    assert app.prefix_headers == ()


@pytest.mark.parametrize(
    "name",
    [
        "Host",
        "host",
        "X-Forwarded-For",
        "x-forwarded-proto",
        "X-Forwarded-Host",
        "X-Real-IP",
        "Forwarded",
        "Connection",
        "Keep-Alive",
        "Transfer-Encoding",
        "Content-Length",
        "Upgrade",
        "TE",
        "Trailer",
        "Proxy-Connection",
        "Expect",
    ],
)
def test_prefix_headers_refuse_names_sockgate_uses_otherwise(tmp_path: Path, name: str) -> None:
    error = load_error(tmp_path, APP + f'prefix_headers = ["{name}"]\n')
    assert error.key == "apps.app1.prefix_headers"
    rest = after_key(error)
    assert repr(name) in rest
    assert "hop-by-hop" in rest


@pytest.mark.parametrize(
    ("extra", "prefixed"),
    [
        ("", True),
        ("strip_prefix = false\n", False),
        ('prefix = "/"\n', False),
        ('prefix = "/a/b/"\n', True),
    ],
)
def test_rewriting_needs_a_stripped_prefix(tmp_path: Path, extra: str, prefixed: bool) -> None:
    (app,) = load_text(tmp_path, APP + extra).apps
    assert app.prefixed is prefixed
    assert app.rewrites is prefixed
    assert App("a", Path("/a.sock"), app.prefix, app.strip_prefix, rewrite=False).rewrites is False


# --- hold -------------------------------------------------------------------------------------


def test_hold_defaults_to_five_seconds(tmp_path: Path) -> None:
    (app,) = load_text(tmp_path, APP).apps
    assert app.hold == 5.0


@pytest.mark.parametrize(("text", "seconds"), [('"0s"', 0.0), ('"250ms"', 0.25), ("30", 30.0)])
def test_hold_is_a_duration_and_zero_turns_it_off(
    tmp_path: Path, text: str, seconds: float
) -> None:
    (app,) = load_text(tmp_path, APP + f"hold = {text}\n").apps
    assert app.hold == seconds


# --- the placeholders of a supervised app's command and env -------------------------------------

PLACES = "{socket} {prefix} {url} {host_url}"


def test_placeholders_are_substituted_in_argv_and_env_and_the_text_stays(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        'listen = "127.0.0.1:8080"\n'
        f'[apps.notes]\nprefix = "/n/"\ncommand = "serve {PLACES} {{other}}"\n'
        f'env = {{ BASE = "{{url}}", ALL = "{PLACES}" }}\n'
        f'[apps.sh]\ncommand = "exec serve --at {{prefix}} {{host_url}}"\nshell = true\n'
        'socket = "/tmp/with space.sock"\n'
        '[apps.list]\ncommand = ["serve", "--base={url}", "{prefix}"]\n',
    )
    notes, sh, listed = (app.command for app in config.apps)
    assert notes is not None
    assert sh is not None
    assert listed is not None
    sock = str(tmp_path / "sockets" / "notes.sock")
    url, host_url = "http://127.0.0.1:8080/n/", "http://notes.localhost:8080/"
    # Unknown braces are left alone (a shell's or a template's).
    assert notes.argv == ("serve", sock, "/n/", url, host_url, "{other}")
    assert notes.env == (("BASE", url), ("ALL", f"{sock} /n/ {url} {host_url}"))
    assert notes.text == f"serve {PLACES} {{other}}"  # as written
    assert notes.shown == f"serve {sock} /n/ {url} {host_url} '{{other}}'"  # as it runs
    # With shell = true, each value is quoted for the shell.
    assert sh.argv == ("/bin/sh", "-c", "exec serve --at /sh/ http://sh.localhost:8080/")
    assert listed.argv == ("serve", "--base=http://127.0.0.1:8080/list/", "/list/")


def test_url_placeholders_follow_the_listen_override(tmp_path: Path) -> None:
    body = '[apps.a]\ncommand = ["serve", "{url}", "{host_url}"]\n'
    config = load_text(tmp_path, body, listen="[::1]:9000")
    assert config.apps[0].command is not None
    assert config.apps[0].command.argv == (
        "serve",
        "http://[::1]:9000/a/",
        "http://a.localhost:9000/",
    )


def test_a_placeholder_without_a_value_is_an_error_naming_the_key(tmp_path: Path) -> None:
    body = '[apps.a]\ncommand = "serve {prefix}"\nenv = { ROOT = "{host_url}" }\n'
    error = load_error(tmp_path, 'listen = "127.0.0.1:8080"\nhost_routes = false\n' + body)
    assert error.key == "apps.a.env.ROOT"
    assert "{host_url} has no value: host_routes = false" in str(error)
    error = load_error(tmp_path, 'listen = "127.0.0.1:0"\n' + body.replace("host_url", "url"))
    assert error.key == "apps.a.env.ROOT"
    assert "give listen a port" in str(error)
    # {socket} and {prefix} need nothing more: port 0 and no host routes are fine.
    fine = load_text(
        tmp_path,
        'listen = "127.0.0.1:0"\nhost_routes = false\n[apps.a]\n'
        'command = "serve {socket} {prefix}"\n',
    )
    assert fine.apps[0].command is not None
    assert fine.apps[0].command.argv[2] == "/a/"
