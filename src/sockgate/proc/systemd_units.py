"""The systemd --user units that start sockgate at login, as `sockgate service install` writes
them: `sockgate-NAME.service` and, for socket activation, `sockgate-NAME.socket`. Pure: the text
of each file and where it goes; writing them and `systemctl` are the command's
(`proc/unitfiles`). docs/service.md shows them.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..config import Config, Listen
from ..errors import SockgateError

PREFIX = "sockgate-"
# What a unit name may hold besides its suffix (systemd also takes ':' and '\'; kept simple).
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")
NOT_IN_NAME = re.compile(r"[^A-Za-z0-9_.-]+")
MAX_NAME = 200  # unit names end at 255 bytes, suffix included
# Words of a command line that need no quotes (a path of letters, digits and these).
PLAIN_WORD = re.compile(r"[A-Za-z0-9_@+=:,./-]+")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Units:
    """The unit files of one installed sockgate: file name to text."""

    name: str  # NAME in sockgate-NAME.service
    files: tuple[tuple[str, str], ...]

    @property
    def service(self) -> str:
        return f"{PREFIX}{self.name}.service"

    @property
    def socket(self) -> str:
        return f"{PREFIX}{self.name}.socket"

    @property
    def activated(self) -> bool:
        return any(file == self.socket for file, _ in self.files)

    @property
    def start(self) -> str:
        """The unit to enable: the socket, which starts the service, or the service itself."""
        return self.socket if self.activated else self.service


def unit_files(name: str) -> tuple[str, str]:
    """Every file name `install` may write for NAME: the socket unit first (stopped first)."""
    return f"{PREFIX}{name}.socket", f"{PREFIX}{name}.service"


def default_name(workdir: Path) -> str:
    """The workdir's folder name, made fit for a unit name."""
    name = NOT_IN_NAME.sub("-", workdir.name).strip("-.")[:MAX_NAME]
    return name or "workdir"


def check_name(name: str) -> str:
    if NAME_PATTERN.fullmatch(name) is None or name.strip("-.") != name or len(name) > MAX_NAME:
        raise SockgateError(
            f"--name {name!r}: use letters, digits, '_', '.' and '-' (not first or last), "
            f"up to {MAX_NAME} characters; it names {PREFIX}NAME.service"
        )
    return name


def unit_dir(environ: Mapping[str, str], home: Path) -> Path:
    """Where systemd --user reads the units a user writes: $XDG_CONFIG_HOME/systemd/user (an
    absolute XDG_CONFIG_HOME only, as the XDG spec says), else ~/.config/systemd/user."""
    base = environ.get("XDG_CONFIG_HOME", "")
    root = Path(base) if base.startswith("/") else home / ".config"
    return root / "systemd" / "user"


def render(
    config: Config, *, name: str, python: str, socket: bool, path: str | None = None
) -> Units:
    """The units for `config` (which must come from a file: the service reloads it) run by the
    interpreter `python`; with `socket`, a socket unit on the config's `listen` starts it.
    `path`: the PATH the apps' commands are found on (the installing shell's), since the user
    manager's own PATH lacks virtualenvs and ~/.local/bin."""
    if config.source is None:
        raise SockgateError("a service needs a config file (`sockgate reload` reads it again)")
    if socket and config.engine == "nginx":
        raise SockgateError(
            "--socket: socket activation is built-in engine only (nginx binds `listen` itself)"
        )
    files = [(f"{PREFIX}{name}.service", _service(config, name, python, socket, path))]
    if socket:
        files.insert(0, (f"{PREFIX}{name}.socket", _socket(config, name)))
    return Units(name, tuple(files))


def _service(config: Config, name: str, python: str, socket: bool, path: str | None) -> str:
    assert config.source is not None
    cfg = str(config.source)
    head = _header(config, name)
    unit = [f"Description=sockgate in {_value(str(config.workdir))}"]
    if socket:
        unit += [
            f"# Started by {PREFIX}{name}.socket on the first connection, on the socket it holds.",
            f"Requires={PREFIX}{name}.socket",
            f"After={PREFIX}{name}.socket",
        ]
    service = [
        "# sockgate says READY=1 once it listens (and STOPPING=1, RELOADING=1) on $NOTIFY_SOCKET.",
        "Type=notify",
        f"ExecStart={_command(python, '-m', 'sockgate', 'run', '-c', cfg)}",
        f"ExecReload={_command(python, '-m', 'sockgate', 'reload', '-c', cfg)}",
        f"WorkingDirectory={_value(str(config.workdir))}",
        *_environment(path),
        "# SIGTERM to sockgate alone, not to every process at once: it drains requests, then",
        "# stops the apps it runs itself; whatever is left when it exits gets SIGKILL.",
        "KillMode=mixed",
        "Restart=on-failure",
    ]
    install = [] if socket else ["", "[Install]", "WantedBy=default.target"]
    return _lines(head, "[Unit]", *unit, "", "[Service]", *service, *install)


def _socket(config: Config, name: str) -> str:
    listen = stream_address(config.listen)
    socket = [
        f"# {PREFIX}{name}.service is started on the first connection and serves this socket;",
        "# `listen` in the config is not bound then (allow_remote applies to this address too).",
        f"ListenStream={listen}",
    ]
    install = ["", "[Install]", "WantedBy=sockets.target"]
    unit = [f"Description=sockgate's socket in {_value(str(config.workdir))}"]
    return _lines(_header(config, name), "[Unit]", *unit, "", "[Socket]", *socket, *install)


def _environment(path: str | None) -> list[str]:
    if not path:
        return []
    quoted = _value(path).replace("\\", "\\\\").replace('"', '\\"')
    return [
        "# The PATH of the shell that installed it: the apps' commands are found as from there.",
        f'Environment="PATH={quoted}"',
    ]


def _header(config: Config, name: str) -> list[str]:
    return [
        f"# Written by `sockgate service install` for {_value(str(config.source))}.",
        f"# `sockgate service uninstall --name {name}` removes it; see docs/service.md.",
    ]


def stream_address(listen: Listen) -> str:
    """`listen` as ListenStream= takes it: systemd binds IP addresses, it resolves no names."""
    if listen.port == 0:
        raise SockgateError(
            f"--socket needs a fixed port: `listen` is {listen} (port 0 is picked when sockgate "
            "starts, and a socket unit binds before it)"
        )
    host = "127.0.0.1" if listen.host == "localhost" else listen.host
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise SockgateError(
            f"--socket needs an IP address in `listen`, not the name {listen.host!r}: systemd "
            "does not resolve names in ListenStream="
        ) from None
    return str(Listen(host, listen.port))


def _command(*words: str) -> str:
    """A command line as systemd splits it: specifiers (%) and variables ($) doubled, words
    with other characters quoted."""
    return " ".join(_word(word) for word in words)


def _word(word: str) -> str:
    text = _value(word).replace("$", "$$")
    if PLAIN_WORD.fullmatch(word):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _value(text: str) -> str:
    """A value as a unit file takes it: one line, specifiers doubled."""
    if CONTROL.search(text):
        raise SockgateError(f"{text!r}: a unit file cannot hold control characters")
    return text.replace("%", "%%")


def _lines(*parts: str | list[str]) -> str:
    lines: list[str] = []
    for part in parts:
        lines.extend([part] if isinstance(part, str) else part)
    return "\n".join(lines) + "\n"
