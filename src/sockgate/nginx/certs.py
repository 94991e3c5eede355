"""The certificate the nginx engine's HTTPS servers show (layer 2).

nginx cannot issue a certificate for each name a client asks for, as the built-in engine does
(tls/contexts.py): with the local CA, sockgate issues ONE leaf for every name of the config
(localhost, 127.0.0.1, ::1, the apps' hosts, allowed_hosts; those the CA may sign) and writes it
where nginx.conf points (tls.certificate_files): beside the CA, outside the workdir, key mode
0600 in a 0700 folder, each file replaced whole. It is issued again at every start and reload,
and whenever the one on disk is due for renewal (`due`), since a leaf lives a week.
"""

from __future__ import annotations

import datetime
import logging
import os
import tempfile
from pathlib import Path

from cryptography import x509

from ..config import Config
from ..config.model import Tls
from ..errors import SockgateError
from ..tls import ca
from .tls import certificate_files, leaf_dir

logger = logging.getLogger(__name__)

# What a client that sends no name (an IP address in the URL) reaches, and the usual names.
BASE_NAMES = ("localhost", "127.0.0.1", "::1")


def wanted_names(config: Config, tls: Tls) -> list[str]:
    """Every name a client may reach the HTTPS listener by, once each, in the order the
    certificate lists them (the first is its subject)."""
    names = [*BASE_NAMES]
    if tls.listen.host not in ("0.0.0.0", "::", ""):
        names.append(tls.listen.host)
    for app in config.apps:
        names += config.app_hosts(app)
    names += [host for host in config.allowed_hosts if host != "*"]
    return list(dict.fromkeys(name.lower().rstrip(".") for name in names))


def install(config: Config) -> ca.Leaf | None:
    """Issue the leaf for `config` and write it where nginx.conf points; None when there is
    nothing to issue (no [tls], or the user's own certificate). SockgateError when the CA
    cannot be used or the files cannot be written."""
    tls = config.tls
    if tls is None or not tls.local_ca:
        return None
    authority = ca.load_or_create(tls.ca_dir, tls.ca_names)
    names = wanted_names(config, tls)
    refused = [name for name in names if not authority.permits(name)]
    if refused:
        logger.warning(
            "the HTTPS certificate leaves out %s: the local CA signs only %s (tls.names adds "
            "names, for a new CA)",
            ", ".join(refused),
            ", ".join(authority.shown_names()),
        )
    leaf = authority.issue([name for name in names if name not in refused])
    cert, key = certificate_files(tls, config.workdir)
    try:
        _private_dir(leaf_dir(tls, config.workdir).parent)
        _private_dir(leaf_dir(tls, config.workdir))
        # nginx reads both only when told to load its config, once they are written.
        _write(key, leaf.key_pem)
        _write(cert, leaf.cert_pem)
    except OSError as exc:
        raise SockgateError(
            f"cannot write the HTTPS certificate to {exc.filename or cert.parent}: "
            f"{exc.strerror or exc}"
        ) from None
    logger.debug(
        "issued the HTTPS certificate for %s, valid until %s (%s)",
        ", ".join(leaf.names),
        f"{leaf.not_after:%Y-%m-%d %H:%M} UTC",
        cert,
    )
    return leaf


def due(config: Config, now: datetime.datetime | None = None) -> bool:
    """Whether the leaf on disk must be issued again: missing, unreadable, or within
    ca.RENEW_BEFORE of its end. False without a leaf to issue."""
    tls = config.tls
    if tls is None or not tls.local_ca:
        return False
    cert, _ = certificate_files(tls, config.workdir)
    try:
        leaf = x509.load_pem_x509_certificate(cert.read_bytes())
    except (OSError, ValueError):
        return True
    now = now or datetime.datetime.now(datetime.UTC)
    return now >= leaf.not_valid_after_utc - ca.RENEW_BEFORE


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)  # also one made before, or under a looser umask


def _write(path: Path, data: bytes) -> None:
    """Whole or not at all, mode 0600: written beside, then renamed over."""
    fd, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as file:
            os.fchmod(file.fileno(), 0o600)
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
