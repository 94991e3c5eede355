"""Where the local CA is trusted: the user's NSS databases, changed with NSS's `certutil`, and
the system's store, for which only the command is given (it needs root; sockgate never runs
sudo).

NSS databases: `~/.pki/nssdb` (Chromium and Chrome read it) and the `cert9.db` of every
Firefox profile (deb, snap and Flatpak builds), which is what Firefox reads instead. The CA goes
in under a nickname made from its fingerprint, so adding it again replaces it and removing it
never touches another CA's entry. Only `ca.pem` is handed to certutil: the key stays where it is.

Nothing here prints: each step returns a small frozen record of what it found or did.
"""

from __future__ import annotations

import base64
import enum
import re
import shlex
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives import hashes, serialization

from .ca import Authority

NICK_PREFIX: Final = "sockgate local CA "
# certutil answers at once; one that waits is asking for a database password on the terminal.
CERTUTIL_TIMEOUT: Final = 20.0
# Firefox profile folders of the deb/tarball, snap and Flatpak builds, under HOME.
FIREFOX_ROOTS: Final = (
    Path(".mozilla/firefox"),
    Path("snap/firefox/common/.mozilla/firefox"),
    Path(".var/app/org.mozilla.firefox/.mozilla/firefox"),
)
OS_RELEASE: Final = Path("/etc/os-release")
# The systems sockgate knows the store of, by os-release ID: each with the IDs that are its own.
FAMILIES: Final = {
    "debian": {"debian", "ubuntu"},
    "fedora": {"fedora", "rhel", "centos"},
    "arch": {"arch", "archlinux"},
}
MACOS_KEYCHAIN: Final = "/Library/Keychains/System.keychain"
PEM_BLOCK: Final = re.compile(
    rb"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", re.DOTALL
)


def nickname(authority: Authority) -> str:
    """Stable for one CA and different for another: 64 bits of its SHA-256 fingerprint."""
    return NICK_PREFIX + authority.fingerprint.replace(":", "")[:16].lower()


# --- NSS databases ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NssDb:
    path: Path  # the folder of cert9.db, given to certutil as sql:PATH
    what: str  # who reads it, for people: "Chromium and Chrome", "Firefox profile NAME"

    @property
    def exists(self) -> bool:
        return (self.path / "cert9.db").is_file()


def shared_db(home: Path) -> NssDb:
    return NssDb(home / ".pki" / "nssdb", "Chromium and Chrome")


def firefox_dbs(home: Path) -> list[NssDb]:
    """Firefox profiles under `home` with a database of their own (cert9.db; the old cert8.db
    of Firefox before 58 is not one certutil's sql: format opens)."""
    found = []
    for root in FIREFOX_ROOTS:
        for db in sorted((home / root).glob("*/cert9.db")):
            found.append(NssDb(db.parent, f"Firefox profile {db.parent.name}"))
    return found


def existing_dbs(home: Path) -> list[NssDb]:
    return [db for db in (shared_db(home), *firefox_dbs(home)) if db.exists]


class Outcome(enum.Enum):
    ADDED = "added to"
    ALREADY = "already in"
    REMOVED = "removed from"
    ABSENT = "not in"
    FAILED = "failed in"


@dataclass(frozen=True, slots=True)
class Change:
    db: NssDb
    outcome: Outcome
    detail: str = ""  # certutil's own words, when it failed
    created: bool = False  # the database was made for this


@dataclass(frozen=True, slots=True)
class Trust:
    """What one database says of the CA: `flags` are certutil's SSL,S/MIME,JAR trust
    attributes ("C,," once `add` ran), "" when the CA is not in it."""

    db: NssDb
    flags: str = ""
    error: str = ""  # certutil could not read the database

    @property
    def trusted(self) -> bool:
        # C: a CA trusted to issue server certificates; T (client auth) alone is not enough.
        return "C" in self.flags.split(",")[0]


@dataclass(frozen=True, slots=True)
class Certutil:
    program: str

    def run(self, *args: str) -> tuple[int, str]:
        """Exit status and what it said (stdout then stderr); 255 with the reason when it could
        not run or did not answer in time."""
        try:
            done = subprocess.run(
                [self.program, *args],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=CERTUTIL_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return 255, f"certutil did not answer in {CERTUTIL_TIMEOUT:.0f} s (a password prompt?)"
        except OSError as exc:
            return 255, f"cannot run {self.program}: {exc.strerror or exc}"
        return done.returncode, (done.stdout + done.stderr).strip()


def find_certutil() -> Certutil | None:
    program = shutil.which("certutil")
    return Certutil(program) if program else None


def add(certutil: Certutil, db: NssDb, authority: Authority) -> Change:
    """The CA into `db`, trusted to issue server certificates; the database is made (empty
    password, as Chromium makes it) when it is not there."""
    created = False
    if not db.exists:
        try:
            db.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            db.path.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            return Change(db, Outcome.FAILED, f"cannot make {db.path}: {exc.strerror}")
        code, said = certutil.run("-N", "-d", f"sql:{db.path}", "--empty-password")
        if code != 0:
            return Change(db, Outcome.FAILED, said)
        created = True
    elif query(certutil, db, authority).trusted:
        return Change(db, Outcome.ALREADY)
    # -A under a nickname already there replaces its trust flags: adding twice leaves one entry.
    nick = nickname(authority)
    code, said = certutil.run(
        "-A", "-d", f"sql:{db.path}", "-t", "C,,", "-n", nick, "-i", str(authority.cert_path)
    )
    if code != 0:
        return Change(db, Outcome.FAILED, said, created)
    return Change(db, Outcome.ADDED, created=created)


def remove(certutil: Certutil, db: NssDb, authority: Authority) -> Change:
    found = query(certutil, db, authority)
    if found.error:
        return Change(db, Outcome.FAILED, found.error)
    if not found.flags:
        return Change(db, Outcome.ABSENT)
    code, said = certutil.run("-D", "-d", f"sql:{db.path}", "-n", nickname(authority))
    if code != 0 and "could not find" not in said:  # gone meanwhile: as good as removed
        return Change(db, Outcome.FAILED, said)
    return Change(db, Outcome.REMOVED)


def query(certutil: Certutil, db: NssDb, authority: Authority) -> Trust:
    """The CA's trust flags in `db`, read from certutil's listing (a line per certificate: its
    nickname, padded, then the flags)."""
    code, said = certutil.run("-L", "-d", f"sql:{db.path}")
    if code != 0:
        return Trust(db, error=said)
    nick = nickname(authority)
    for line in said.splitlines():
        if line.startswith(nick + " "):
            return Trust(db, flags=line[len(nick) :].strip())
    return Trust(db)


# --- the system's store --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SystemStore:
    name: str  # "Debian/Ubuntu", ...
    add: str  # the one command that adds the CA (run by the user, with sudo)
    remove: str
    nss_tools: str  # how to install certutil here
    bundle: Path | None  # the file of every certificate the system trusts (None: a keychain)


def read_os_release(path: Path = OS_RELEASE) -> dict[str, str]:
    """os-release's KEY=value lines (values may be shell-quoted); {} when it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.lstrip().startswith("#"):
            try:
                words = shlex.split(value)
            except ValueError:
                continue
            fields[key.strip()] = " ".join(words)
    return fields


def family(platform: str, release: Mapping[str, str]) -> str | None:
    """The system's family: macos, debian, fedora or arch. Its own ID first, then those it is
    like (ID_LIKE: Mint is like ubuntu, Rocky like rhel, Manjaro like arch)."""
    if platform == "darwin":
        return "macos"
    ids = [release.get("ID", ""), *release.get("ID_LIKE", "").split()]
    for name in ids:
        for known, members in FAMILIES.items():
            if name.lower() in members:
                return known
    return None


def system_store(
    authority: Authority, *, platform: str, release: Mapping[str, str]
) -> SystemStore | None:
    """The system's store and the commands for it; None for a system sockgate knows none for."""
    cert = shlex.quote(str(authority.cert_path))
    tag = nickname(authority).removeprefix(NICK_PREFIX)
    match family(platform, release):
        case "debian":
            anchor = f"/usr/local/share/ca-certificates/sockgate-{tag}.crt"
            return SystemStore(
                "Debian/Ubuntu",
                add=f"sudo cp {cert} {anchor} && sudo update-ca-certificates",
                remove=f"sudo rm -f {anchor} && sudo update-ca-certificates",
                nss_tools="sudo apt-get install libnss3-tools",
                bundle=Path("/etc/ssl/certs/ca-certificates.crt"),
            )
        case "fedora":
            anchor = f"/etc/pki/ca-trust/source/anchors/sockgate-{tag}.pem"
            return SystemStore(
                "Fedora/RHEL",
                add=f"sudo cp {cert} {anchor} && sudo update-ca-trust",
                remove=f"sudo rm -f {anchor} && sudo update-ca-trust",
                nss_tools="sudo dnf install nss-tools",
                bundle=Path("/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem"),
            )
        case "arch":
            return SystemStore(
                "Arch",
                add=f"sudo trust anchor --store {cert}",
                remove=f"sudo trust anchor --remove {cert}",
                nss_tools="sudo pacman -S nss",
                bundle=Path("/etc/ssl/certs/ca-certificates.crt"),
            )
        case "macos":
            return _macos(authority, cert)
    return None


def _macos(authority: Authority, cert: str) -> SystemStore:
    # `security delete-certificate -Z` names a certificate by its SHA-1 hash.
    sha1 = authority.cert.fingerprint(hashes.SHA1()).hex().upper()
    return SystemStore(
        "macOS",
        add=f"sudo security add-trusted-cert -d -r trustRoot -k {MACOS_KEYCHAIN} {cert}",
        remove=f"sudo security delete-certificate -Z {sha1} {MACOS_KEYCHAIN}",
        nss_tools="brew install nss",
        bundle=None,
    )


def in_bundle(bundle: Path, authority: Authority) -> bool | None:
    """Whether the bundle holds the CA's certificate (as PEM, or DER); None when it cannot be
    read."""
    try:
        data = bundle.read_bytes()
    except OSError:
        return None
    der = authority.cert.public_bytes(serialization.Encoding.DER)
    if der in data:
        return True
    for block in PEM_BLOCK.finditer(data):
        try:
            if base64.b64decode(b"".join(block.group(1).split())) == der:
                return True
        except ValueError:
            continue  # a damaged block says nothing of ours
    return False
