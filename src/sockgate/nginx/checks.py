"""What nginx cannot take safely, refused before a line of nginx.conf is written: paths that are
not absolute UTF-8 without nginx syntax in them (the HTTPS certificate's among them), `$` in a
prefix, a listen host nginx cannot read, app names that differ only in case."""

from __future__ import annotations

import re
from pathlib import Path

from ..config import Config, Listen
from ..errors import ConfigError

# In a path nginx would read these as syntax or (`$`) as a variable it cannot escape; a path that
# holds one is refused rather than quoted, so every path in the file means exactly itself.
_UNSAFE_IN_PATH = re.compile(r"[\s;{}\"'\\#$]|[\x00-\x1f\x7f]")
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?")


def check(config: Config) -> None:
    source = str(config.source) if config.source else ""
    _check_path(config.workdir, "workdir", source)
    _check_listen(config.listen, "listen", source)
    if config.tls is not None:
        _check_listen(config.tls.listen, "tls.listen", source)
        # The paths nginx.conf names: the user's files, or the leaf's under ca_dir.
        for key, path in (
            ("tls.cert", config.tls.cert),
            ("tls.key", config.tls.key),
            ("tls.ca_dir", config.tls.ca_dir if config.tls.local_ca else None),
        ):
            if path is not None:
                _check_path(path, key, source)
    upstreams: dict[str, str] = {}
    for app in config.apps:
        _check_path(app.socket, f"apps.{app.name}.socket", source)
        if "$" in app.prefix:
            raise ConfigError(
                f"{app.prefix!r}: nginx would read '$' as the start of a variable in the "
                "redirect and the X-Forwarded-Prefix header; choose a prefix without '$'",
                source=source,
                key=f"apps.{app.name}.prefix",
            )
        # nginx compares upstream names without regard to case.
        other = upstreams.setdefault(app.name.lower(), app.name)
        if other != app.name:
            raise ConfigError(
                f"{app.name!r} and {other!r} differ only in case, which nginx cannot tell "
                "apart; rename one of them",
                source=source,
                key=f"apps.{app.name}",
            )


def _check_path(path: Path, key: str, source: str) -> None:
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(
            f"{text!r} is not valid UTF-8, and nginx.conf is a UTF-8 file; rename it",
            source=source,
            key=key,
        ) from None
    bad = _UNSAFE_IN_PATH.search(text)
    if bad is not None:
        raise ConfigError(
            f"{text!r} contains {bad.group()!r}, which the nginx engine does not write into "
            "nginx.conf (whitespace, quotes, ';', '{', '}', '#', '\\' and '$' are refused); "
            "use a path without it",
            source=source,
            key=key,
        )
    if not path.is_absolute():
        raise ConfigError(f"{text!r}: expected an absolute path", source=source, key=key)


def _check_listen(listen: Listen, key: str, source: str) -> None:
    host = listen.host
    if ":" not in host and not _HOSTNAME.fullmatch(host):
        raise ConfigError(
            f"{str(listen)!r}: {host!r} is not an IP address or host name nginx can listen on",
            source=source,
            key=key,
        )
