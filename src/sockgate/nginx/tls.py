"""The nginx engine's HTTPS listener: the same servers again on tls.listen, with TLS, and where
the certificate nginx shows lives. Pure (layer 1), like the rest of the render."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import textwrap
from collections.abc import Callable
from pathlib import Path

from ..config import Config
from ..config.model import Tls
from .hosts import Listener
from .tree import Directive, directive

# The files of the local CA's certificate for one workdir, in leaf_dir.
LEAF_CERT = "leaf.pem"
LEAF_KEY = "leaf-key.pem"
# nginx 1.25.1 made HTTP/2 a server directive (`http2 on;`) and deprecated `listen ... http2`,
# the only spelling before it (Debian bookworm has 1.22).
HTTP2_DIRECTIVE_SINCE = (1, 25, 1)
TLS_PROTOCOLS = ("TLSv1.2", "TLSv1.3")


def leaf_dir(tls: Tls, workdir: Path) -> Path:
    """Where the local CA's certificate for `workdir` is kept: beside the CA, never in the
    workdir (which gets shared, copied and committed), in a folder of its own per workdir."""
    digest = hashlib.sha256(os.fsencode(workdir)).hexdigest()[:16]
    return tls.ca_dir / "leaves" / digest


def certificate_files(tls: Tls, workdir: Path) -> tuple[Path, Path]:
    """(certificate, key) that nginx shows on the HTTPS listener: the user's, or the leaf."""
    if tls.cert is not None and tls.key is not None:
        return tls.cert, tls.key
    folder = leaf_dir(tls, workdir)
    return folder / LEAF_CERT, folder / LEAF_KEY


def servers(
    config: Config,
    tls: Tls,
    nginx_version: tuple[int, ...] | None,
    on: Callable[[Config, Listener], list[Directive]],
) -> list[Directive]:
    """The servers `on` renders for a listener, again on tls.listen with TLS; the first says
    why once for all of them."""
    cert, key = certificate_files(tls, config.workdir)
    listener = _listener(tls, cert, key, nginx_version)
    if tls.local_ca:
        whose = (
            f"one certificate from sockgate's local CA ({tls.ca_dir}) for every configured "
            "name, issued at each start and reload and renewed before it ends (nginx cannot "
            "issue one per name asked)"
        )
    else:
        whose = "the certificate of tls.cert and tls.key"
    intro = textwrap.fill(
        f"HTTPS on {tls.listen} (tls.listen): the servers above again, with TLS and {whose}. "
        "Apps behind it are told X-Forwarded-Proto: https ($scheme), and their redirects to "
        "https://HOST/ go under their prefix.",
        92,
        break_long_words=False,  # nor paths
        break_on_hyphens=False,
    )
    rendered = on(config, listener)
    first = rendered[0]
    rendered[0] = dataclasses.replace(
        first, comment="\n\n".join(filter(None, (intro, first.comment)))
    )
    return rendered


def _listener(tls: Tls, cert: Path, key: Path, nginx_version: tuple[int, ...] | None) -> Listener:
    params = ["ssl"]
    settings = [
        directive("ssl_certificate", str(cert)),
        directive("ssl_certificate_key", str(key)),
        directive("ssl_protocols", *TLS_PROTOCOLS),
    ]
    if tls.http2:
        if nginx_version is not None and nginx_version >= HTTP2_DIRECTIVE_SINCE:
            settings.insert(0, directive("http2", "on"))
        else:
            params.append("http2")
    return Listener(str(tls.listen), tuple(params), tuple(settings), scheme="https")
