"""`sockgate trust`: make browsers and the system trust sockgate's local CA (or stop, or say
whether they do). The stores and certutil are `tls/stores`'; this module picks the CA and says
what happened (docs/https.md)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import click

from .. import config
from ..config.model import CA_NAMES
from ..config.tlstable import default_ca_dir
from ..errors import SockgateError
from ..tls import ca, stores
from .common import EXIT_ERROR, config_option, handle_errors


@click.command()
@config_option("Config file (default: ./sockgate.toml, if there): its [tls] table names the CA.")
@click.option(
    "--ca-dir",
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="The CA in DIR, instead of the config's (or ~/.local/share/sockgate/ca).",
)
@click.option("--uninstall", is_flag=True, help="Remove the CA from the stores instead.")
@click.option("--show", is_flag=True, help="Say where the CA is and which stores trust it.")
@handle_errors
def trust(config_path: Path | None, ca_dir: Path | None, uninstall: bool, show: bool) -> None:
    """Trust sockgate's local CA in your NSS databases (Chromium's ~/.pki/nssdb and each Firefox
    profile's, with certutil), and print the one command that adds it to the system's store.

    The CA is the config's ([tls] ca_dir), else ~/.local/share/sockgate/ca; it is made if it is
    not there yet. sudo is never run: the system command is printed for you to run.

    Exit codes: 0 done (a database that refused is a warning); 1 invalid config; 2 nothing done:
    certutil missing, every database refused, no CA (--uninstall), or the config's [tls] uses
    cert and key files instead of the local CA. --show exits 0 whatever it finds.
    """
    if uninstall and show:
        raise click.UsageError("pass --uninstall or --show, not both")
    directory, names = _where(config_path, ca_dir)
    if show:
        _show(directory)
    elif uninstall:
        _uninstall(directory)
    else:
        _install(directory, names)


def _where(config_path: Path | None, ca_dir: Path | None) -> tuple[Path, tuple[str, ...]]:
    """The CA's folder and the names it is made for: --ca-dir, the config's [tls], the default."""
    path = config_path or Path(config.DEFAULT_FILE)
    cfg = config.load(path) if config_path is not None or path.is_file() else None
    tls = cfg.tls if cfg is not None else None
    names = tls.ca_names if tls is not None and tls.local_ca else CA_NAMES
    if ca_dir is not None:
        return ca_dir.expanduser().resolve(), names
    if tls is None:
        return default_ca_dir(), names
    if not tls.local_ca:
        raise SockgateError(
            f"{cfg.source if cfg else path}: [tls] uses your own cert and key ({tls.cert}), and "
            '`sockgate trust` is for sockgate\'s local CA (ca = "auto"): the stores need your '
            "certificate's issuer, which sockgate does not know (--ca-dir DIR trusts a local "
            "CA all the same)"
        )
    return tls.ca_dir, names


def _install(directory: Path, names: Sequence[str]) -> None:
    made = not (directory / ca.CA_CERT).exists()
    authority = ca.load_or_create(directory, names)
    click.echo(f"{'made the' if made else 'the'} local CA: {authority.cert_path}")
    system = _system(authority)
    certutil = stores.find_certutil()
    changes = []
    if certutil is None:
        _no_certutil(system, "sockgate trust")
    else:
        home = Path.home()
        for db in (stores.shared_db(home), *stores.firefox_dbs(home)):
            changes.append(stores.add(certutil, db, authority))
            _echo_change(changes[-1])
    done = [c for c in changes if c.outcome is not stores.Outcome.FAILED]
    if done:
        click.echo("browsers read their databases when they start: restart them to see it")
    _echo_system(system, authority, "to have the system trust it too (curl, Python, ...), run:")
    if not done:
        sys.exit(EXIT_ERROR)


def _uninstall(directory: Path) -> None:
    authority = _existing(directory)
    if authority is None:
        raise SockgateError(
            f"no local CA in {directory}: nothing to know its entries by. A CA removed earlier "
            "shows in `certutil -L -d sql:$HOME/.pki/nssdb` as 'sockgate local CA ...', which "
            "`certutil -D -d sql:$HOME/.pki/nssdb -n NICKNAME` removes"
        )
    system = _system(authority)
    certutil = stores.find_certutil()
    changes = []
    if certutil is None:
        _no_certutil(system, "sockgate trust --uninstall")
    else:
        dbs = stores.existing_dbs(Path.home())
        if not dbs:
            click.echo(f"no NSS database under {Path.home()}: nothing to remove there")
        for db in dbs:
            changes.append(stores.remove(certutil, db, authority))
            _echo_change(changes[-1])
    _echo_system(system, authority, "if the system trusts it, this removes it:", remove=True)
    refused = bool(changes) and all(c.outcome is stores.Outcome.FAILED for c in changes)
    if certutil is None or refused:
        sys.exit(EXIT_ERROR)


def _show(directory: Path) -> None:
    authority = _existing(directory)
    if authority is None:
        click.echo(
            f"no local CA in {directory}: `sockgate trust` makes it and trusts it (so does the "
            "first `sockgate run` with a [tls] table, without trusting it)"
        )
        return
    click.echo(f"local CA  {authority.cert_path}")
    click.echo(f"  SHA-256   {authority.fingerprint}")
    click.echo(f"  nickname  {stores.nickname(authority)}")
    click.echo(f"  signs     {', '.join(authority.shown_names())}")
    click.echo(f"  expires   {authority.cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    click.echo("trusted by")
    system = _system(authority)
    certutil = stores.find_certutil()
    if certutil is None:
        hint = system.nss_tools if system else "the package with NSS's certutil"
        click.echo(f"  ?            NSS databases: not checked, certutil is not on PATH ({hint})")
    else:
        dbs = stores.existing_dbs(Path.home())
        if not dbs:
            click.echo(f"  no           NSS databases: there is none under {Path.home()}")
        for db in dbs:
            click.echo(_trust_line(stores.query(certutil, db, authority)))
    click.echo(_system_line(system, authority))


def _existing(directory: Path) -> ca.Authority | None:
    """The CA in `directory`, None when there is none; never makes one."""
    if not (directory / ca.CA_CERT).exists():
        return None
    try:
        return ca.load(directory)
    except (OSError, ValueError) as exc:
        raise SockgateError(f"local CA in {directory}: cannot read it: {exc}") from None


def _system(authority: ca.Authority) -> stores.SystemStore | None:
    release = stores.read_os_release()
    return stores.system_store(authority, platform=sys.platform, release=release)


def _no_certutil(system: stores.SystemStore | None, again: str) -> None:
    install = (
        f"`{system.nss_tools}`"
        if system is not None
        else "the package with NSS's tools (libnss3-tools, nss-tools or nss)"
    )
    click.echo(
        "sockgate: certutil is not on PATH, so no browser database was changed: "
        f"{install} installs it; then run `{again}` again",
        err=True,
    )


def _echo_change(change: stores.Change) -> None:
    db = change.db
    if change.outcome is stores.Outcome.FAILED:
        click.echo(f"sockgate: warning: {db.what} ({db.path}): {change.detail}", err=True)
        return
    made = "; made it" if change.created else ""
    click.echo(f"{change.outcome.value} {db.path} ({db.what}{made})")


def _echo_system(
    system: stores.SystemStore | None, authority: ca.Authority, lead: str, *, remove: bool = False
) -> None:
    if system is None:
        click.echo(
            f"system store: sockgate knows no command for this system ({_system_id()}); the "
            f"certificate to add (or remove) is {authority.cert_path}"
        )
        return
    click.echo(f"system store ({system.name}): {lead}")
    click.echo(f"  {system.remove if remove else system.add}")


def _trust_line(found: stores.Trust) -> str:
    where = f"{found.db.what} ({found.db.path})"
    if found.error:
        return f"  ?            {where}: {found.error}"
    if found.trusted:
        return f"  yes          {where}"
    if found.flags:
        return f"  no           {where}: there, but not as a CA for sites (flags {found.flags})"
    return f"  no           {where}"


def _system_line(system: stores.SystemStore | None, authority: ca.Authority) -> str:
    if system is None:
        return f"  ?            system store: unknown for this system ({_system_id()})"
    if system.bundle is None:
        return f"  ?            system store ({system.name}): not checked; Keychain Access shows it"
    held = stores.in_bundle(system.bundle, authority)
    answer = {True: "yes", False: "no", None: "?"}[held]
    return f"  {answer:<12} system store ({system.name}, {system.bundle})"


def _system_id() -> str:
    release = stores.read_os_release()
    return f"{sys.platform}, ID={release.get('ID', '?')} ID_LIKE={release.get('ID_LIKE', '')}"
