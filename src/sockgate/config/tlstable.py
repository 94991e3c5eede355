"""The `[tls]` table: the HTTPS listener, and whose certificate it shows.

`ca = "auto"` (the default) issues certificates from sockgate's local CA, kept in `ca_dir`
outside any workdir; `cert` and `key` name the user's own files instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .model import APP_HOST_PATTERN, DEFAULT_TLS_LISTEN, LOCAL_SUFFIX, Listen, Tls
from .values import Reader, kind_of

KEYS = {"listen", "http2", "ca", "cert", "key", "ca_dir", "names"}
# Top-level names reserved for private use (RFC 6761, ICANN 2024): the only single labels
# `names` takes, since a CA allowed a public top-level name could sign for all of it.
PRIVATE_TLDS = ("test", "internal")


def default_ca_dir() -> Path:
    """$XDG_DATA_HOME/sockgate/ca, that is ~/.local/share/sockgate/ca."""
    data = os.environ.get("XDG_DATA_HOME") or ""
    base = Path(data) if os.path.isabs(data) else Path.home() / ".local" / "share"
    return base / "sockgate" / "ca"


def read_tls(
    reader: Reader, raw: Mapping[str, Any], workdir: Path, listen: Callable[[str, object], Listen]
) -> Tls:
    """`raw` is the `[tls]` table; `listen` parses a HOST:PORT value as the top level does."""
    reader.no_unknown("tls", raw, KEYS)
    address = listen("tls.listen", raw["listen"]) if "listen" in raw else DEFAULT_TLS_LISTEN
    http2 = reader.boolean("tls.http2", raw.get("http2", True))
    cert = key = None
    if "cert" in raw or "key" in raw:
        if "cert" not in raw or "key" not in raw:
            missing = "key" if "cert" in raw else "cert"
            raise reader.fail(f"tls.{missing}", "expected both cert and key, or neither")
        if "ca" in raw:
            raise reader.fail(
                "tls.ca", 'expected either ca = "auto" or cert and key files, not both'
            )
        cert = _existing_file(reader, "tls.cert", raw["cert"])
        key = _existing_file(reader, "tls.key", raw["key"])
    elif raw.get("ca", "auto") != "auto":
        value = raw["ca"]
        raise reader.fail(
            "tls.ca",
            f'{value!r}: expected "auto" (sockgate\'s local CA); to use certificates of your '
            "own, set cert and key instead",
        )
    ca_dir = reader.path("tls.ca_dir", raw["ca_dir"]) if "ca_dir" in raw else default_ca_dir()
    # The default is checked too, unless the workdir is the home folder it lives under.
    inside = ca_dir == workdir or workdir in ca_dir.parents
    if inside and ("ca_dir" in raw or workdir not in (Path.home(), *Path.home().parents)):
        raise reader.fail(
            "tls.ca_dir",
            f"{str(ca_dir)!r} is inside the workdir {str(workdir)!r}: the CA's key must live "
            "outside it (a workdir gets shared, copied and committed); leave ca_dir out for "
            "~/.local/share/sockgate/ca",
        )
    return Tls(
        listen=address,
        http2=http2,
        ca_dir=ca_dir,
        names=_names(reader, raw.get("names", [])),
        cert=cert,
        key=key,
    )


def _existing_file(reader: Reader, key: str, value: object) -> Path:
    path = reader.path(key, value)
    if not path.is_file():
        raise reader.fail(key, f"{str(path)!r}: expected an existing file")
    return path


def _names(reader: Reader, value: object) -> tuple[str, ...]:
    key = "tls.names"
    if not isinstance(value, list):
        raise reader.fail(key, f"expected an array of DNS names, got {kind_of(value)} {value!r}")
    names: list[str] = []
    for item in value:
        name = item.lower().rstrip(".") if isinstance(item, str) else None
        if (
            name is None
            or name.startswith("*")
            or ("." not in name and name not in PRIVATE_TLDS)
            or not APP_HOST_PATTERN.fullmatch(name)
        ):
            raise reader.fail(
                key,
                f"{item!r}: expected a DNS name such as 'home.arpa', 'myapp.example.com' or "
                f"one of {', '.join(PRIVATE_TLDS)} (the CA may then sign it and every name "
                "under it; no other single label, no '*')",
            )
        if name == "localhost" or name.endswith(LOCAL_SUFFIX):
            raise reader.fail(key, f"{item!r}: the CA signs localhost and *.localhost already")
        if name not in names:
            names.append(name)
    return tuple(names)
