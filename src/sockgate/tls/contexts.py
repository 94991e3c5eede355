"""The HTTPS listener's TLS contexts: a certificate for the name each client asks for (SNI),
issued by the local CA when first asked, kept in memory and renewed before it ends.

Python's ssl module loads certificates from files only; an issued leaf goes through a memfd (a
file in memory, Linux) so no leaf key ever touches a disk, or else through a private temporary
folder that is removed at once.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from ..config.model import Tls
from ..errors import SockgateError
from . import ca

log = logging.getLogger(__name__)

# Names with a certificate kept; past it the cache starts again (a client making up names).
CACHE_MAX: Final = 1024
# What a client that sends no name (an IP address in the URL) is shown.
DEFAULT_NAMES: Final = ("localhost", "127.0.0.1", "::1")
ALPN_H2: Final = ["h2", "http/1.1"]
ALPN_H1: Final = ["http/1.1"]


class ServerCerts:
    """`context` is what the listener wraps connections with; with the local CA it picks a
    certificate per name in its SNI callback."""

    def __init__(self, tls: Tls, listen_host: str = "") -> None:
        self.tls = tls
        self._alpn = ALPN_H2 if tls.http2 else ALPN_H1
        self._leaves: dict[str, tuple[ssl.SSLContext, datetime.datetime]] = {}
        self.authority: ca.Authority | None = None
        if tls.local_ca:
            self.authority = ca.load_or_create(tls.ca_dir, tls.ca_names)
            # Also the address listened on, when it is another loopback one (127.0.0.2).
            own = listen_host not in DEFAULT_NAMES and self.authority.permits(listen_host)
            self._default_names = (*DEFAULT_NAMES, *([listen_host] if own else []))
            self.context = self._for(None)
            self.context.sni_callback = self._on_sni
        else:
            assert tls.cert is not None
            assert tls.key is not None
            self.context = self._new_context()
            try:
                self.context.load_cert_chain(tls.cert, tls.key)
            except (OSError, ssl.SSLError) as exc:
                raise SockgateError(
                    f"tls.cert {tls.cert} with tls.key {tls.key}: cannot load: {exc}"
                ) from None

    def __repr__(self) -> str:
        return f"<ServerCerts names={len(self._leaves)} alpn={self._alpn}>"

    def _new_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(self._alpn)
        return context

    def _on_sni(
        self, sslobj: ssl.SSLObject, name: str | None, _context: ssl.SSLContext
    ) -> int | None:
        assert self.authority is not None
        if name is not None and not self.authority.permits(name):
            log.info(
                "TLS: refused a certificate for %r (the local CA signs only %s)",
                name,
                ", ".join(self.authority.shown_names()),
            )
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        try:
            sslobj.context = self._for(name)
        except (SockgateError, ssl.SSLError, OSError) as exc:
            log.error("TLS: cannot issue a certificate for %r: %s", name, exc)
            return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
        return None

    def _for(self, name: str | None) -> ssl.SSLContext:
        """The context with a current certificate for `name` (None: the default names)."""
        key = "" if name is None else name.lower().rstrip(".")
        now = datetime.datetime.now(datetime.UTC)
        cached = self._leaves.get(key)
        if cached is not None and now < cached[1]:
            return cached[0]
        assert self.authority is not None
        names = self._default_names if not key else (key,)
        leaf = self.authority.issue(names, now=now)
        context = self._new_context()
        with _pem_file(leaf.cert_pem + leaf.key_pem) as path:
            context.load_cert_chain(path)
        if len(self._leaves) >= CACHE_MAX:
            self._leaves.clear()
        self._leaves[key] = (context, leaf.renew_at)
        log.debug(
            "TLS: issued a certificate for %s, valid until %s", ", ".join(names), leaf.not_after
        )
        return context


def banner(tls: Tls, port: int) -> str:
    """The start-up line for the HTTPS listener (`port`: the one bound, when it says 0)."""
    shown = tls.listen.public_host
    protocols = "HTTP/2 and HTTP/1.1" if tls.http2 else "HTTP/1.1"
    if tls.local_ca:
        whose = f"local CA {tls.ca_dir / ca.CA_CERT}; `sockgate trust` to trust it"
    else:
        whose = f"certificate {tls.cert}"
    return f"also https://{shown}:{port or tls.listen.port}/ ({protocols}, {whose})"


@contextlib.contextmanager
def _pem_file(data: bytes) -> Iterator[str]:
    """A path that holds `data` only while in use: a memfd where there are memfds."""
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is not None:
        fd = memfd_create("sockgate-leaf", os.MFD_CLOEXEC)
        try:
            os.write(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="sockgate-leaf-") as folder:  # mode 0700
        path = Path(folder) / "leaf.pem"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        yield str(path)


def check(tls: Tls) -> tuple[bool, str]:
    """What `sockgate check` says of the certificates, without making anything: the local CA
    (there, or made at the first start) or the user's files, and whether they can be used."""
    if not tls.local_ca:
        try:
            ServerCerts(tls)
        except SockgateError as exc:
            return False, str(exc)
        return True, f"certificate {tls.cert}, key {tls.key}: loaded"
    if not (tls.ca_dir / ca.CA_CERT).exists():
        return True, (
            f"local CA: none yet in {tls.ca_dir}; the first `sockgate run` (or `sockgate "
            "trust`) makes it"
        )
    try:
        authority = ca.load(tls.ca_dir)
        ca.check_names(authority, tls.ca_names)
    except OSError as exc:
        return False, f"local CA in {tls.ca_dir}: {exc.strerror or exc}"
    except SockgateError as exc:
        return False, str(exc)
    until = authority.cert.not_valid_after_utc.date()
    return True, (
        f"local CA {authority.cert_path} (until {until}): signs only "
        f"{', '.join(authority.shown_names())}"
    )
