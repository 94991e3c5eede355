"""sockgate's local certificate authority: made once per user, able to sign only local names.

The CA certificate carries X.509 name constraints (RFC 5280 4.2.1.10): it may sign `localhost`
and every name under it, the names the config adds (`tls.names`), 127.0.0.0/8 and ::1. A
verifier (browsers, curl, OpenSSL, `cryptography`) rejects any other name signed with it, so its
key, if it leaks, cannot impersonate a site on the internet. `Authority.issue` refuses such names
before they are signed at all.

The key is P-256 (ECDSA): fast to make for each name a client asks for, and what every browser
takes. Files: `ca.pem` and `ca-key.pem` (mode 0600) in a 0700 directory outside any workdir.
"""

from __future__ import annotations

import datetime
import fcntl
import getpass
import ipaddress
import os
import socket
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..config.model import CA_NETWORKS
from ..errors import SockgateError

CA_CERT: Final = "ca.pem"
CA_KEY: Final = "ca-key.pem"
CA_LIFETIME: Final = datetime.timedelta(days=3650)
# Leaves live a week and are renewed two days before they end: short enough that a copied leaf
# key is soon worthless, long enough that a laptop asleep over a weekend wakes to a valid one.
LEAF_LIFETIME: Final = datetime.timedelta(days=7)
RENEW_BEFORE: Final = datetime.timedelta(days=2)
# Clocks of a client and a VM drift; a leaf is valid from a little before it is made.
BACKDATE: Final = datetime.timedelta(hours=1)
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class NotPermitted(SockgateError):
    """A name the CA may not sign."""


@dataclass(frozen=True, slots=True)
class Leaf:
    """A certificate with its key, both PEM: what a TLS context (or nginx) loads."""

    names: tuple[str, ...]
    cert_pem: bytes
    key_pem: bytes
    not_after: datetime.datetime

    @property
    def renew_at(self) -> datetime.datetime:
        return self.not_after - RENEW_BEFORE


@dataclass(frozen=True, slots=True)
class Authority:
    directory: Path
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    dns: tuple[str, ...]  # the DNS subtrees its name constraints permit

    @property
    def cert_path(self) -> Path:
        return self.directory / CA_CERT

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def fingerprint(self) -> str:
        return self.cert.fingerprint(hashes.SHA256()).hex(":").upper()

    def permits(self, name: str) -> bool:
        """Whether `name` (a DNS name or an IP address) is inside the CA's constraints."""
        address = _address(name)
        if address is not None:
            return any(address in ipaddress.ip_network(net) for net in CA_NETWORKS)
        name = name.lower().rstrip(".")
        return any(name == allowed or name.endswith("." + allowed) for allowed in self.dns)

    def issue(self, names: Sequence[str], *, now: datetime.datetime | None = None) -> Leaf:
        """A leaf certificate for `names` (the first is its subject), with a key of its own.
        NotPermitted for a name outside the CA's constraints: it is never signed."""
        refused = [name for name in names if not self.permits(name)]
        if refused or not names:
            raise NotPermitted(
                f"the local CA signs only {', '.join(self.shown_names())}; "
                f"not {', '.join(refused) or 'an empty name list'}"
            )
        now = now or datetime.datetime.now(datetime.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = []
        for name in names:
            address = _address(name)
            sans.append(x509.IPAddress(address) if address else x509.DNSName(name.lower()))
        issuer_ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        not_after = now + LEAF_LIFETIME
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski.value),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(self.key, hashes.SHA256())
        )
        return Leaf(
            names=tuple(names),
            cert_pem=cert.public_bytes(serialization.Encoding.PEM) + self.cert_pem,
            key_pem=key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            not_after=not_after,
        )

    def shown_names(self) -> list[str]:
        return [*self.dns, *(f"*.{name}" for name in self.dns), *CA_NETWORKS]


def load_or_create(directory: Path, names: Sequence[str]) -> Authority:
    """The CA in `directory`, made there (0700, key 0600) if it is not yet. SockgateError when
    its files are unreadable, its key is open to others, or it cannot sign all of `names`
    (a CA's constraints are fixed when it is made)."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with (directory / ".lock").open("a") as lock:  # two sockgates starting at once
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (directory / CA_CERT).exists():
                _create(directory, names)
            authority = load(directory)
    except OSError as exc:
        raise SockgateError(f"local CA in {directory}: {exc.strerror or exc}") from None
    check_names(authority, names)
    return authority


def check_names(authority: Authority, names: Sequence[str]) -> None:
    """SockgateError unless `authority` may sign all of `names` (tls.names): a CA's constraints
    are fixed when it is made."""
    missing = [name for name in names if not authority.permits(name)]
    if missing:
        raise SockgateError(
            f"the local CA in {authority.directory} was made for {', '.join(authority.dns)} "
            f"and cannot sign {', '.join(missing)} (tls.names): a CA's names are fixed when it "
            "is made. To make a new one: `sockgate trust --uninstall`, remove that folder, "
            "start again, then `sockgate trust`"
        )


def load(directory: Path) -> Authority:
    """The CA already in `directory` (OSError if it is not there)."""
    key_path = directory / CA_KEY
    mode = key_path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SockgateError(
            f"{key_path} is readable by other users (mode {stat.filemode(mode)}): "
            f"run `chmod 600 {key_path}`; sockgate will not use a CA key others can read"
        )
    cert = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise SockgateError(f"{key_path}: expected the EC key sockgate makes")
    constraints = cert.extensions.get_extension_for_class(x509.NameConstraints).value
    dns = tuple(
        str(tree.value)
        for tree in constraints.permitted_subtrees or ()
        if isinstance(tree, x509.DNSName)
    )
    return Authority(directory, cert, key, dns)


def _create(directory: Path, names: Sequence[str]) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    who = f"{getpass.getuser()}@{socket.gethostname()}"
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sockgate local CA"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"sockgate local CA {who} {now:%Y-%m-%d}"),
        ]
    )
    permitted: list[x509.GeneralName] = [x509.DNSName(name) for name in names]
    permitted += [x509.IPAddress(ipaddress.ip_network(net)) for net in CA_NETWORKS]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(cert_sign=True), critical=True)
        .add_extension(x509.NameConstraints(permitted, None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write(directory / CA_KEY, key_pem, 0o600)
    _write(directory / CA_CERT, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Whole or not at all: written beside, then renamed over."""
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # whatever the umask made of it
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(partial, path)


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _address(name: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return None
