"""`sockgate trust`: the local CA into NSS databases with the real certutil, in a HOME of the
test's own (never this machine's ~/.pki or ~/.local/share), and the system store's command for
each kind of system, from fake os-release files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sockgate.cli import main
from sockgate.config.model import CA_NAMES
from sockgate.tls import ca, stores

needs_certutil = pytest.mark.skipif(
    shutil.which("certutil") is None, reason="certutil (libnss3-tools) is not installed"
)


# --- helpers --------------------------------------------------------------------------------------


def _trust(home: Path, *args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    """`sockgate trust ARGS` run in `home` with HOME and XDG_DATA_HOME there; `path` replaces
    PATH (to leave certutil out)."""
    env = os.environ | {
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "data"),
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [sys.executable, "-m", "sockgate", "trust", *args],
        cwd=home,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def _certutil(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["certutil", *args], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
    )


def _new_db(directory: Path) -> Path:
    """An empty NSS database, as a browser's first start makes it."""
    directory.mkdir(parents=True)
    done = _certutil("-N", "-d", f"sql:{directory}", "--empty-password")
    assert done.returncode == 0, done.stderr
    return directory


def _ca_dir(home: Path) -> Path:
    return home / "data" / "sockgate" / "ca"


def _entries(db: Path, nick: str) -> list[str]:
    """The trust flags of every entry of `nick` in the database's listing."""
    done = _certutil("-L", "-d", f"sql:{db}")
    assert done.returncode == 0, done.stderr
    return [line[len(nick) :].strip() for line in done.stdout.splitlines() if line.startswith(nick)]


def _holds(db: Path, authority: ca.Authority) -> bool:
    """certutil finds the CA's nickname in `db`, and what it holds is the CA's certificate."""
    done = _certutil("-L", "-d", f"sql:{db}", "-n", stores.nickname(authority), "-a")
    if done.returncode != 0:
        return False
    return x509.load_pem_x509_certificate(done.stdout.encode()) == authority.cert


def _show_line(output: str, where: Path) -> str:
    """The --show verdict ("yes", "no", "?") of the store at `where`."""
    for line in output.splitlines():
        if f"({where})" in line:
            return line.split()[0]
    raise AssertionError(f"{where} not in --show's output:\n{output}")


# --- adding, showing, removing --------------------------------------------------------------------


@needs_certutil
def test_trust_makes_the_ca_and_adds_it_to_the_users_nss_database(tmp: Path) -> None:
    done = _trust(tmp)
    assert done.returncode == 0, done.stderr
    authority = ca.load(_ca_dir(tmp))
    nssdb = tmp / ".pki" / "nssdb"
    assert f"made the local CA: {authority.cert_path}" in done.stdout
    assert f"added to {nssdb} (Chromium and Chrome; made it)" in done.stdout
    assert "system store" in done.stdout
    assert _holds(nssdb, authority)
    [flags] = _entries(nssdb, stores.nickname(authority))
    assert "C" in flags.split(",")[0]  # a CA for server certificates
    # Only the certificate went in: the database holds no key, and none was printed.
    keys = _certutil("-K", "-d", f"sql:{nssdb}")
    assert "PRIVATE KEY" not in done.stdout + done.stderr
    assert "sockgate" not in keys.stdout


@needs_certutil
def test_trust_twice_leaves_one_entry(tmp: Path) -> None:
    assert _trust(tmp).returncode == 0
    again = _trust(tmp)
    assert again.returncode == 0, again.stderr
    nssdb = tmp / ".pki" / "nssdb"
    assert f"already in {nssdb}" in again.stdout
    assert "made the local CA" not in again.stdout
    authority = ca.load(_ca_dir(tmp))
    assert len(_entries(nssdb, stores.nickname(authority))) == 1


@needs_certutil
def test_show_before_and_after_trust_and_uninstall(tmp: Path) -> None:
    authority = ca.load_or_create(_ca_dir(tmp), CA_NAMES)
    nssdb = _new_db(tmp / ".pki" / "nssdb")
    before = _trust(tmp, "--show")
    assert before.returncode == 0, before.stderr
    assert f"local CA  {authority.cert_path}" in before.stdout
    assert authority.fingerprint in before.stdout
    assert "localhost, *.localhost, 127.0.0.0/8, ::1/128" in before.stdout
    assert f"expires   {authority.cert.not_valid_after_utc:%Y-%m-%d}" in before.stdout
    assert _show_line(before.stdout, nssdb) == "no"

    assert _trust(tmp).returncode == 0
    after = _trust(tmp, "--show")
    assert _show_line(after.stdout, nssdb) == "yes"

    removed = _trust(tmp, "--uninstall")
    assert removed.returncode == 0, removed.stderr
    assert f"removed from {nssdb}" in removed.stdout
    assert not _holds(nssdb, authority)
    assert _entries(nssdb, stores.nickname(authority)) == []
    assert _show_line(_trust(tmp, "--show").stdout, nssdb) == "no"
    # Again: nothing there to remove is not a failure.
    again = _trust(tmp, "--uninstall")
    assert again.returncode == 0, again.stderr
    assert f"not in {nssdb}" in again.stdout


@needs_certutil
def test_firefox_profiles_with_their_own_database_get_it_too(tmp: Path) -> None:
    profile = _new_db(tmp / ".mozilla" / "firefox" / "ab12.default-release")
    snap = _new_db(tmp / "snap" / "firefox" / "common" / ".mozilla" / "firefox" / "cd34.default")
    old = tmp / ".mozilla" / "firefox" / "old.default"  # no cert9.db: not a database to touch
    old.mkdir()
    done = _trust(tmp)
    assert done.returncode == 0, done.stderr
    authority = ca.load(_ca_dir(tmp))
    for db in (profile, snap):
        assert f"added to {db} (Firefox profile {db.name})" in done.stdout
        assert _holds(db, authority)
    assert list(old.iterdir()) == []

    shown = _trust(tmp, "--show").stdout
    assert _show_line(shown, profile) == _show_line(shown, snap) == "yes"
    removed = _trust(tmp, "--uninstall")
    assert removed.returncode == 0, removed.stderr
    for db in (profile, snap, tmp / ".pki" / "nssdb"):
        assert f"removed from {db}" in removed.stdout
        assert not _holds(db, authority)


def test_without_certutil_it_says_which_package_installs_it(tmp: Path) -> None:
    (tmp / "bin").mkdir()
    done = _trust(tmp, path=str(tmp / "bin"))
    assert done.returncode == 2
    authority = ca.load(_ca_dir(tmp))  # made all the same: the system command needs it
    system = stores.system_store(authority, platform=sys.platform, release=stores.read_os_release())
    hint = system.nss_tools if system else "libnss3-tools, nss-tools or nss"
    assert "certutil is not on PATH, so no browser database was changed" in done.stderr
    assert hint in done.stderr
    if system is not None:
        assert system.add in done.stdout
    assert not (tmp / ".pki").exists()
    uninstall = _trust(tmp, "--uninstall", path=str(tmp / "bin"))
    assert uninstall.returncode == 2
    assert "certutil is not on PATH" in uninstall.stderr


# --- which CA ------------------------------------------------------------------------------------


def test_a_config_with_its_own_cert_and_key_is_refused(tmp: Path) -> None:
    (tmp / "site.pem").write_text("not read here\n")
    (tmp / "site-key.pem").write_text("not read here\n")
    (tmp / "sockgate.toml").write_text(
        'listen = "127.0.0.1:8080"\n[tls]\ncert = "site.pem"\nkey = "site-key.pem"\n'
    )
    done = _trust(tmp)
    assert done.returncode == 2
    assert "uses your own cert and key" in done.stderr
    assert "sockgate's local CA" in done.stderr
    assert not (tmp / "data").exists()


@needs_certutil
def test_the_configs_ca_dir_and_names_then_ca_dir_overrides(tmp: Path) -> None:
    config = tmp / "site" / "sockgate.toml"
    config.parent.mkdir()
    config.write_text(f'[tls]\nca_dir = "{tmp}/ca"\nnames = ["home.arpa"]\n')
    done = _trust(tmp, "-c", str(config))
    assert done.returncode == 0, done.stderr
    assert ca.load(tmp / "ca").permits("app.home.arpa")
    assert not _ca_dir(tmp).exists()

    other = _trust(tmp, "-c", str(config), "--ca-dir", str(tmp / "other"))
    assert other.returncode == 0, other.stderr
    assert f"made the local CA: {tmp / 'other' / 'ca.pem'}" in other.stdout


def test_show_without_a_ca_makes_none(tmp: Path) -> None:
    done = _trust(tmp, "--show")
    assert done.returncode == 0, done.stderr
    assert f"no local CA in {_ca_dir(tmp)}: `sockgate trust` makes it" in done.stdout
    assert not (tmp / "data").exists()
    uninstall = _trust(tmp, "--uninstall")
    assert uninstall.returncode == 2
    assert f"no local CA in {_ca_dir(tmp)}" in uninstall.stderr
    assert not (tmp / "data").exists()


def test_uninstall_and_show_together_are_refused() -> None:
    result = CliRunner().invoke(main, ["trust", "--uninstall", "--show"])
    assert result.exit_code == 2
    assert "pass --uninstall or --show, not both" in result.output


# --- the system store ----------------------------------------------------------------------------


@pytest.fixture
def authority(tmp: Path) -> ca.Authority:
    return ca.load_or_create(tmp / "my ca", CA_NAMES)  # a space, for the commands' quoting


def _store(tmp: Path, authority: ca.Authority, os_release: str) -> stores.SystemStore | None:
    path = tmp / "os-release"
    path.write_text(os_release)
    release = stores.read_os_release(path)
    return stores.system_store(authority, platform="linux", release=release)


@pytest.mark.parametrize(
    "os_release",
    [
        "ID=debian\nVERSION_ID=12\n",
        'ID=ubuntu\nID_LIKE=debian\nPRETTY_NAME="Ubuntu 24.04 LTS"\n',
        'ID=linuxmint\nID_LIKE="ubuntu debian"\n',
    ],
)
def test_debian_and_its_kin(tmp: Path, authority: ca.Authority, os_release: str) -> None:
    store = _store(tmp, authority, os_release)
    tag = stores.nickname(authority).removeprefix(stores.NICK_PREFIX)
    cert = f"'{authority.cert_path}'"
    anchor = f"/usr/local/share/ca-certificates/sockgate-{tag}.crt"
    assert store == stores.SystemStore(
        "Debian/Ubuntu",
        add=f"sudo cp {cert} {anchor} && sudo update-ca-certificates",
        remove=f"sudo rm -f {anchor} && sudo update-ca-certificates",
        nss_tools="sudo apt-get install libnss3-tools",
        bundle=Path("/etc/ssl/certs/ca-certificates.crt"),
    )


@pytest.mark.parametrize(
    "os_release", ['ID="fedora"\nVERSION_ID=40\n', 'ID="rocky"\nID_LIKE="rhel centos fedora"\n']
)
def test_fedora_and_rhel(tmp: Path, authority: ca.Authority, os_release: str) -> None:
    store = _store(tmp, authority, os_release)
    assert store is not None
    tag = stores.nickname(authority).removeprefix(stores.NICK_PREFIX)
    anchor = f"/etc/pki/ca-trust/source/anchors/sockgate-{tag}.pem"
    assert store.name == "Fedora/RHEL"
    assert store.add == f"sudo cp '{authority.cert_path}' {anchor} && sudo update-ca-trust"
    assert store.remove == f"sudo rm -f {anchor} && sudo update-ca-trust"
    assert store.nss_tools == "sudo dnf install nss-tools"
    assert store.bundle == Path("/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem")


@pytest.mark.parametrize("os_release", ["ID=arch\n", "ID=manjaro\nID_LIKE=arch\n"])
def test_arch(tmp: Path, authority: ca.Authority, os_release: str) -> None:
    store = _store(tmp, authority, os_release)
    assert store is not None
    assert store.name == "Arch"
    assert store.add == f"sudo trust anchor --store '{authority.cert_path}'"
    assert store.remove == f"sudo trust anchor --remove '{authority.cert_path}'"
    assert store.nss_tools == "sudo pacman -S nss"


def test_macos_whatever_os_release_says(tmp: Path, authority: ca.Authority) -> None:
    store = stores.system_store(authority, platform="darwin", release={})
    assert store is not None
    assert store.name == "macOS"
    assert store.add == (
        "sudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain "
        f"'{authority.cert_path}'"
    )
    assert store.remove.startswith("sudo security delete-certificate -Z ")
    assert store.bundle is None


@pytest.mark.parametrize(
    "os_release", ['ID=opensuse-tumbleweed\nID_LIKE="opensuse suse"\n', "", "# only a comment\n"]
)
def test_a_system_without_a_known_store(
    tmp: Path, authority: ca.Authority, os_release: str
) -> None:
    assert _store(tmp, authority, os_release) is None


def test_os_release_that_cannot_be_read_is_empty(tmp: Path) -> None:
    assert stores.read_os_release(tmp / "missing") == {}


def test_whether_a_bundle_holds_the_ca(tmp: Path, authority: ca.Authority) -> None:
    other = ca.load_or_create(tmp / "other", CA_NAMES)
    bundle = tmp / "ca-certificates.crt"
    bundle.write_bytes(other.cert_pem)
    assert stores.in_bundle(bundle, authority) is False
    # A bundle's PEM is wrapped as its tool wraps it: compare the certificates, not the text.
    wrapped = authority.cert_pem.replace(b"\n", b"\r\n")
    bundle.write_bytes(other.cert_pem + b"# sockgate\n" + wrapped)
    assert stores.in_bundle(bundle, authority) is True
    bundle.write_bytes(authority.cert.public_bytes(serialization.Encoding.DER))
    assert stores.in_bundle(bundle, authority) is True
    assert stores.in_bundle(tmp / "missing.crt", authority) is None
