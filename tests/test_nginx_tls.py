"""The nginx engine's HTTPS listener (`[tls]`): rendering, the one certificate sockgate issues
for it, `nginx -t`, and a real nginx serving HTTP/1.1 and HTTP/2 over TLS to a real app."""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import re
import signal
import ssl
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import verification
from cryptography.x509.oid import NameOID

from sockgate import config as sgconfig
from sockgate.config import App, Config, Listen
from sockgate.config.model import Tls
from sockgate.errors import ConfigError
from sockgate.nginx import certs
from sockgate.nginx import run as nginx_run  # not `import test_config`: pytest would collect it
from sockgate.nginx.render import render
from sockgate.nginx.tls import certificate_files, leaf_dir
from sockgate.tls import ca
from tests.support.proc import Proxy, free_port, run_sockgate, wait_for_line, write_config
from tests.test_nginx_render import assert_golden

CA_DIR = Path("/home/me/.local/share/sockgate/ca")
HTTPS = Tls(listen=Listen("127.0.0.1", 8443), ca_dir=CA_DIR)
TLS = Config(
    source=Path("/srv/sg/sockgate.toml"),
    listen=Listen("127.0.0.1", 8099),
    workdir=Path("/srv/sg"),
    apps=(
        App("app1", Path("/run/sg/app1.sock"), "/app1/"),
        App("notes", Path("/run/sg/notes.sock"), "/notes/", hosts=("*.notes.localhost",)),
    ),
    tls=HTTPS,
)
BOOKWORM = (1, 22, 1)


def with_tls(config: Config, **changes: Any) -> Config:
    assert config.tls is not None
    return dataclasses.replace(config, tls=dataclasses.replace(config.tls, **changes))


def servers(text: str) -> list[str]:
    """The text of each server block (they hold no nested `server {`)."""
    return [part.split("\n    }\n")[0] for part in text.split("    server {\n")[1:]]


# --- rendering ---------------------------------------------------------------------------------


def test_tls_config_matches_golden() -> None:
    assert_golden("tls.conf", render(TLS, nginx_version=BOOKWORM))


def test_the_plain_servers_are_unchanged_and_come_first() -> None:
    plain = render(dataclasses.replace(TLS, tls=None))
    with_https = render(TLS, nginx_version=BOOKWORM)
    assert with_https.startswith(plain.removesuffix("}\n"))
    assert len(servers(with_https)) == 2 * len(servers(plain))


def test_every_https_server_listens_with_ssl_and_shows_the_leaf() -> None:
    cert, key = certificate_files(HTTPS, TLS.workdir)
    assert cert.parent == leaf_dir(HTTPS, TLS.workdir)
    assert cert.is_relative_to(CA_DIR / "leaves")
    https = [s for s in servers(render(TLS, nginx_version=BOOKWORM)) if ":8443" in s]
    # The 421 guard, the prefix server, each app's own host, other *.localhost names.
    assert len(https) == 5
    assert "listen 127.0.0.1:8443 default_server ssl http2;" in https[0]
    for server in https:
        assert f"ssl_certificate {cert};" in server
        assert f"ssl_certificate_key {key};" in server
        assert "ssl_protocols TLSv1.2 TLSv1.3;" in server


def test_http2_is_spelled_as_the_installed_nginx_takes_it() -> None:
    old = render(TLS, nginx_version=(1, 25, 0))
    assert old == render(TLS)  # unknown: the spelling every version takes
    assert "listen 127.0.0.1:8443 ssl http2;" in old
    assert "http2 on;" not in old
    new = render(TLS, nginx_version=(1, 25, 1))
    assert "listen 127.0.0.1:8443 ssl;" in new
    assert "http2" not in new.replace("http2 on;", "").replace("HTTP2-Settings", "")
    assert new.count("http2 on;") == 5
    off = render(with_tls(TLS, http2=False), nginx_version=(1, 25, 1))
    assert "http2 on" not in off
    assert "listen 127.0.0.1:8443 ssl;" in off


def test_apps_behind_https_are_told_https_and_their_redirects_follow() -> None:
    plain, https = (
        next(s for s in servers(render(TLS)) if f":{port}" in s and "location /app1/" in s)
        for port in (8099, 8443)
    )
    # The same $scheme in both: nginx says http on the one, https on the other.
    for server in (plain, https):
        assert "proxy_set_header X-Forwarded-Proto $scheme;" in server
    assert "proxy_redirect http://$http_host/ http://$http_host/app1/;" in plain
    assert "proxy_redirect https://$http_host/ https://$http_host/app1/;" in https


def test_the_users_own_certificate_is_named_as_it_is() -> None:
    own = with_tls(TLS, cert=Path("/etc/ssl/me.pem"), key=Path("/etc/ssl/me.key"))
    text = render(own, nginx_version=BOOKWORM)
    assert text.count("ssl_certificate /etc/ssl/me.pem;") == 5
    assert text.count("ssl_certificate_key /etc/ssl/me.key;") == 5
    assert "leaves" not in text


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"ca_dir": Path("/home/me/my ca")}, "tls.ca_dir"),
        ({"cert": Path("/etc/ssl/a;b.pem"), "key": Path("/etc/ssl/k.pem")}, "tls.cert"),
        ({"cert": Path("/etc/ssl/a.pem"), "key": Path("relative.key")}, "tls.key"),
        ({"listen": Listen("bad host", 8443)}, "tls.listen"),
    ],
)
def test_what_nginx_cannot_take_is_refused(changes: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        render(with_tls(TLS, **changes))
    assert caught.value.key == key


# --- the certificate ---------------------------------------------------------------------------


def local_config(tmp: Path, **changes: Any) -> Config:
    """A workdir and a CA folder side by side, neither inside the other."""
    apps = (
        App("app1", tmp / "a.sock", "/app1/", hosts=("app1.test",)),
        App("notes", tmp / "n.sock", "/notes/", hosts=("*.notes.localhost",)),
    )
    fields: dict[str, Any] = {
        "listen": Listen("127.0.0.1", free_port()),
        "allowed_hosts": ("*", "box.lan"),
        "tls": Tls(listen=Listen("127.0.0.1", free_port()), ca_dir=tmp / "ca"),
    } | changes
    return Config(source=None, workdir=tmp / "work", apps=apps, **fields)


def sans(pem: bytes) -> list[str]:
    cert = x509.load_pem_x509_certificate(pem)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(name.value) for name in names]


def test_one_leaf_covers_every_name_the_ca_may_sign(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = local_config(tmp_path)
    with caplog.at_level(logging.WARNING):
        leaf = certs.install(config)
    assert leaf is not None
    assert sans(leaf.cert_pem) == [
        "localhost",
        "127.0.0.1",
        "::1",
        "app1.localhost",
        "notes.localhost",
        "*.notes.localhost",
    ]
    # The names left out are named once, with what the CA signs.
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "app1.test, box.lan" in warning
    assert "*.localhost" in warning
    # A verifier that knows only the CA takes it for each name, wildcard included.
    authority = ca.load(tmp_path / "ca")
    chain = x509.load_pem_x509_certificates(leaf.cert_pem)
    store = verification.Store([authority.cert])
    for name in ("localhost", "notes.localhost", "x.notes.localhost"):
        verifier = (
            verification.PolicyBuilder().store(store).build_server_verifier(x509.DNSName(name))
        )
        verifier.verify(chain[0], chain[1:])


def test_the_leaf_is_private_outside_the_workdir_and_replaced_whole(tmp_path: Path) -> None:
    config = local_config(tmp_path)
    assert config.tls is not None
    first = certs.install(config)
    second = certs.install(config)
    assert first is not None
    assert second is not None
    cert, key = certificate_files(config.tls, config.workdir)
    assert not key.is_relative_to(config.workdir)
    assert key.parent == tmp_path / "ca" / "leaves" / key.parent.name
    for path in (cert, key):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for folder in (key.parent, key.parent.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    assert cert.read_bytes() == second.cert_pem
    assert key.read_bytes() == second.key_pem
    assert second.cert_pem != first.cert_pem
    assert sorted(p.name for p in key.parent.iterdir()) == ["leaf-key.pem", "leaf.pem"]
    # Another workdir gets a folder of its own.
    other = dataclasses.replace(config, workdir=tmp_path / "other")
    assert leaf_dir(config.tls, other.workdir) != key.parent


def test_a_leaf_is_due_two_days_before_it_ends(tmp_path: Path) -> None:
    config = local_config(tmp_path)
    assert certs.due(config)  # none yet
    leaf = certs.install(config)
    assert leaf is not None
    assert not certs.due(config)
    assert not certs.due(config, now=leaf.renew_at - datetime.timedelta(minutes=1))
    assert certs.due(config, now=leaf.renew_at)
    assert not certs.due(with_tls(config, cert=tmp_path / "c", key=tmp_path / "k"))
    assert not certs.due(dataclasses.replace(config, tls=None))


def test_nothing_is_issued_for_the_users_own_certificate(tmp_path: Path) -> None:
    config = with_tls(local_config(tmp_path), cert=tmp_path / "c.pem", key=tmp_path / "k.pem")
    assert certs.install(config) is None
    assert not (tmp_path / "ca").exists()


# --- nginx -t ----------------------------------------------------------------------------------


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate of the user's own (not the local CA's) and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
        .sign(key, hashes.SHA256())
    )
    paths = folder / "mine.pem", folder / "mine.key"
    paths[0].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


@pytest.mark.integration  # nginx -t runs from inside sockgate, which kinds.py does not follow
@pytest.mark.nginx
@pytest.mark.parametrize("whose", ["local-ca", "own", "http1-only"])
def test_nginx_accepts_the_https_servers(
    tmp: Path, whose: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = local_config(tmp, allowed_hosts=())
    if whose == "own":
        cert, key = self_signed(tmp)
        config = with_tls(config, cert=cert, key=key)
    elif whose == "http1-only":
        config = with_tls(config, http2=False)
    with caplog.at_level(logging.WARNING):
        nginx_run.test_config(config)
    # Not even a warning: nginx's (deprecated spellings, protocol options said twice) are
    # logged as warnings; ours names the one host the CA may not sign.
    assert [r.getMessage() for r in caplog.records if "[warn]" in r.getMessage()] == []
    assert (tmp / "ca" / "leaves").exists() == (whose != "own")


# --- a real run --------------------------------------------------------------------------------


TOML = """\
listen = "127.0.0.1:{port}"
workdir = "work"
engine = "nginx"

[tls]
listen = "127.0.0.1:{tls_port}"
ca_dir = "{ca_dir}"

[apps.app1]
socket = "{socket}"
"""


def tls_setup(tmp: Path, socket: Path) -> tuple[Path, Config, int]:
    port = free_port()
    tls_port = free_port()
    while tls_port == port:
        tls_port = free_port()
    path = write_config(
        tmp / "sockgate.toml",
        TOML.format(port=port, tls_port=tls_port, ca_dir=tmp / "ca", socket=socket),
    )
    return path, sgconfig.load(path), tls_port


def curl(ca_file: Path, url: str, *options: str) -> tuple[dict[str, Any], str]:
    """The echo app's JSON for `url`, and the HTTP version curl spoke."""
    args = ["curl", "-sS", "--fail", "--cacert", str(ca_file), "-w", "\n%{http_version}"]
    done = subprocess.run(
        [*args, *options, url],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == 0, done.stderr
    body, _, version = done.stdout.rpartition("\n")
    return json.loads(body), version


def headers(seen: dict[str, Any]) -> dict[str, str]:
    return dict(seen["headers"])


def served_serial(port: int) -> int:
    """The serial of the certificate nginx shows on `port` now."""
    pem = ssl.get_server_certificate(("127.0.0.1", port), timeout=10)
    return x509.load_pem_x509_certificate(pem.encode()).serial_number


def file_serial(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


@pytest.mark.nginx
def test_nginx_serves_https_over_http1_and_http2(tmp: Path, starlette_sock: Path) -> None:
    path, config, tls_port = tls_setup(tmp, starlette_sock)
    ca_file = tmp / "ca" / ca.CA_CERT
    with Proxy(path, engine="nginx") as proxy:
        banner = f"also https://127.0.0.1:{tls_port}/ (HTTP/2 and HTTP/1.1, local CA {ca_file}"
        proxy.wait_for_output(re.escape(banner))
        url = f"https://localhost:{tls_port}/app1/x?y=1"
        for option, version in (("--http1.1", "1.1"), ("--http2", "2")):
            seen, spoken = curl(ca_file, url, option)
            assert spoken == version
            assert (seen["path"], seen["query"]) == ("/x", "y=1")
            told = headers(seen)
            assert told["x-forwarded-proto"] == "https"
            assert told["host"] == f"localhost:{tls_port}"
            assert told["x-forwarded-prefix"] == "/app1"
        # The app at its own origin, with a name only the leaf's SANs cover.
        resolve = f"app1.localhost:{tls_port}:127.0.0.1"
        own = f"https://app1.localhost:{tls_port}/z"
        seen, spoken = curl(ca_file, own, "--http2", "--resolve", resolve)
        assert (seen["path"], spoken) == ("/z", "2")
        assert headers(seen)["x-forwarded-proto"] == "https"
        # The plain listener still says http.
        seen, _ = curl(ca_file, f"http://127.0.0.1:{proxy.port}/app1/")
        assert headers(seen)["x-forwarded-proto"] == "http"
    # The key nginx read is private, beside the CA, outside the workdir.
    assert config.tls is not None
    _, key = certificate_files(config.tls, config.workdir)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert not key.is_relative_to(config.workdir)
    assert not list(config.workdir.rglob("*.pem"))


@pytest.mark.nginx
def test_a_reload_issues_the_certificate_again(tmp: Path, starlette_sock: Path) -> None:
    path, config, tls_port = tls_setup(tmp, starlette_sock)
    assert config.tls is not None
    cert, _ = certificate_files(config.tls, config.workdir)
    with Proxy(path, engine="nginx") as proxy:
        before = file_serial(cert)
        assert served_serial(tls_port) == before
        assert proxy.proc is not None
        proxy.proc.send_signal(signal.SIGHUP)
        proxy.wait_for_output(r"reloaded: .*\(passed on to nginx\)")
        after = file_serial(cert)
        assert after != before
        # The old worker is gone once it says so: every connection now gets the new one.
        wait_for_line(config.error_log, "exiting")
        assert served_serial(tls_port) == after
        seen, _ = curl(tmp / "ca" / ca.CA_CERT, f"https://localhost:{tls_port}/app1/")
        assert seen["path"] == "/"


@pytest.mark.nginx
def test_a_certificate_due_for_renewal_is_renewed_without_a_reload(
    tmp: Path, starlette_sock: Path
) -> None:
    path, config, tls_port = tls_setup(tmp, starlette_sock)
    assert config.tls is not None
    cert, key = certificate_files(config.tls, config.workdir)
    with Proxy(path, engine="nginx") as proxy:
        # A leaf a day from its end, as nginx would have after five days without a reload.
        authority = ca.load(config.tls.ca_dir)
        old = authority.issue(
            ["localhost"], now=datetime.datetime.now(datetime.UTC) - ca.RENEW_BEFORE * 3
        )
        key.write_bytes(old.key_pem)
        cert.write_bytes(old.cert_pem)
        assert certs.due(config)
        assert proxy.proc is not None
        proxy.proc.send_signal(nginx_run.RENEW_SIGNAL)  # what the hourly alarm sends
        proxy.wait_for_output("renewed the HTTPS certificate")
        assert not certs.due(config)
        renewed = file_serial(cert)
        wait_for_line(config.error_log, "exiting")
        assert served_serial(tls_port) == renewed
        assert "reloaded:" not in proxy.output()  # the config was not read again


@pytest.mark.nginx
def test_check_runs_nginx_t_with_tls(tmp: Path) -> None:
    path, _, _ = tls_setup(tmp, tmp / "nothing.sock")
    done = run_sockgate("check", "-c", str(path), cwd=tmp)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "nginx -t ok" in done.stdout
