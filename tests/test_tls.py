"""HTTPS on the built-in engine: the `[tls]` table, the local CA and its name constraints, leaf
certificates issued per SNI name, and HTTP/1.1 over TLS with real clients (curl, httpx)."""

from __future__ import annotations

import dataclasses
import datetime
import re
import shutil
import socket
import ssl
import stat
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
from websockets.sync.client import connect

from sockgate import config
from sockgate.config import reconfig
from sockgate.config.model import Tls
from sockgate.errors import ConfigError, SockgateError
from sockgate.tls import ca
from sockgate.tls.contexts import ServerCerts
from tests.conftest import RawFactory
from tests.support.https import HTTPS_LINE, curl, https_sockgate
from tests.support.proc import Proxy, free_port, run_sockgate, write_config
from tests.support.rawapp import Conn


def load(tmp: Path, body: str) -> config.Config:
    return config.load(write_config(tmp / "sockgate.toml", body))


# --- the [tls] table


def test_an_empty_tls_table_turns_https_on_with_safe_defaults(
    tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp / "data"))
    cfg = load(tmp, 'workdir = "work"\n[tls]\n')
    assert cfg.tls == Tls(ca_dir=tmp / "data" / "sockgate" / "ca")
    assert str(cfg.tls.listen) == "127.0.0.1:8443"
    assert cfg.tls.http2
    assert cfg.tls.local_ca
    assert load(tmp, "").tls is None  # no table, no HTTPS


@pytest.mark.parametrize(
    ("body", "key", "says"),
    [
        ('[tls]\ncert = "c.pem"\n', "tls.key", "both cert and key"),
        ('[tls]\nca = "mine"\n', "tls.ca", '"auto"'),
        ('[tls]\nca_dir = "work/ca"\n', "tls.ca_dir", "outside"),
        ('[tls]\nnames = ["com"]\n', "tls.names", "no other single label"),
        ('[tls]\nnames = ["*.example.com"]\n', "tls.names", "no '*'"),
        ('[tls]\nnames = ["x.localhost"]\n', "tls.names", "already"),
        ('[tls]\nlisten = "0.0.0.0:8443"\n', "tls.listen", "allow_remote"),
        ('listen = "127.0.0.1:9000"\n[tls]\nlisten = "127.0.0.1:9000"\n', "tls.listen", "own"),
        ('workers = 2\n[tls]\nlisten = "127.0.0.1:0"\n', "tls.listen", "agree"),
        ("[tls]\nhttp3 = true\n", "tls.http3", "unknown key"),
    ],
)
def test_tls_config_errors_name_the_key(tmp: Path, body: str, key: str, says: str) -> None:
    (tmp / "c.pem").write_text("x")
    with pytest.raises(ConfigError) as err:
        load(tmp, 'workdir = "work"\n' + body)
    assert err.value.key == key
    assert says in str(err.value)


def test_a_tls_change_needs_a_restart(tmp: Path) -> None:
    old = load(tmp, "")
    new = dataclasses.replace(old, tls=Tls(ca_dir=tmp / "ca"))
    with pytest.raises(ConfigError, match="restart") as err:
        reconfig.check_fixed(old, new)
    assert err.value.key == "tls"


# --- the local CA


@pytest.fixture
def authority(tmp: Path) -> ca.Authority:
    return ca.load_or_create(tmp / "ca", ("localhost", "test"))


def verify(authority: ca.Authority, leaf_pem: bytes, name: x509.GeneralName) -> None:
    chain = x509.load_pem_x509_certificates(leaf_pem)
    verifier = PolicyBuilder().store(Store([authority.cert])).build_server_verifier(name)
    verifier.verify(chain[0], chain[1:])


def test_the_ca_key_is_private_and_the_ca_is_made_once(tmp: Path, authority: ca.Authority) -> None:
    folder = tmp / "ca"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / ca.CA_KEY).stat().st_mode) == 0o600
    again = ca.load_or_create(folder, ("localhost",))
    assert again.fingerprint == authority.fingerprint
    (folder / ca.CA_KEY).chmod(0o644)
    with pytest.raises(SockgateError, match="readable by other users"):
        ca.load(folder)


def test_leaves_verify_for_local_names(authority: ca.Authority) -> None:
    for name in ("localhost", "app1.localhost", "deep.app1.localhost", "notes.test"):
        verify(authority, authority.issue([name]).cert_pem, x509.DNSName(name))
    import ipaddress

    for address in ("127.0.0.1", "127.3.4.5", "::1"):
        leaf = authority.issue([address]).cert_pem
        verify(authority, leaf, x509.IPAddress(ipaddress.ip_address(address)))


@pytest.mark.parametrize("name", ["example.com", "localhost.example.com", "10.0.0.1", "test.com"])
def test_the_ca_refuses_to_sign_other_names(authority: ca.Authority, name: str) -> None:
    with pytest.raises(ca.NotPermitted, match="signs only localhost"):
        authority.issue([name])


def test_a_leaked_key_cannot_make_a_certificate_anyone_accepts(
    tmp: Path, authority: ca.Authority
) -> None:
    """Sign example.com with the CA's key, going around `issue`'s check: the name constraints in
    the CA certificate make every verifier reject it."""
    forger = dataclasses.replace(authority, dns=(*authority.dns, "com"))
    forged = forger.issue(["example.com"]).cert_pem
    with pytest.raises(VerificationError, match="name constraint"):
        verify(authority, forged, x509.DNSName("example.com"))
    leaf = x509.load_pem_x509_certificates(forged)[0]
    (tmp / "forged.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    openssl = shutil.which("openssl")
    if openssl is not None:  # the same refusal from OpenSSL, which browsers on Linux share
        run = subprocess.run(
            [openssl, "verify", "-CAfile", str(authority.cert_path), str(tmp / "forged.pem")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert run.returncode != 0
        assert "permitted subtree violation" in run.stdout + run.stderr


def test_a_ca_cannot_grow_names_after_it_is_made(tmp: Path, authority: ca.Authority) -> None:
    with pytest.raises(SockgateError, match=r"cannot sign home\.arpa.*fixed"):
        ca.load_or_create(tmp / "ca", ("localhost", "home.arpa"))


def test_leaves_are_short_lived_and_renewed_before_they_end(tmp: Path) -> None:
    certs = ServerCerts(Tls(ca_dir=tmp / "ca"))
    first = certs._for("app1.localhost")
    assert certs._for("app1.localhost") is first  # kept in memory
    leaf = ca.load(tmp / "ca").issue(["x.localhost"])
    assert leaf.not_after - datetime.datetime.now(datetime.UTC) <= ca.LEAF_LIFETIME
    # Renewal is due: the next handshake gets a new certificate.
    context, _ = certs._leaves["app1.localhost"]
    certs._leaves["app1.localhost"] = (context, datetime.datetime.now(datetime.UTC))
    assert certs._for("app1.localhost") is not first


def test_own_certificate_files_that_do_not_load_are_named(tmp: Path) -> None:
    (tmp / "c.pem").write_text("not a certificate")
    (tmp / "k.pem").write_text("not a key")
    with pytest.raises(SockgateError, match=r"tls\.cert .*c\.pem.*cannot load"):
        ServerCerts(Tls(cert=tmp / "c.pem", key=tmp / "k.pem"))


# --- serving HTTPS


def test_https_over_http11_with_curl_at_prefix_and_host(
    tmp: Path, https_proxy: tuple[Proxy, int]
) -> None:
    proxy, port = https_proxy
    cafile = str(tmp / "ca" / ca.CA_CERT)
    for url, resolve in (
        (f"https://localhost:{port}/app1/x", f"localhost:{port}:127.0.0.1"),
        (f"https://app1.localhost:{port}/x", f"app1.localhost:{port}:127.0.0.1"),
        (f"https://127.0.0.1:{port}/app1/x", f"localhost:{port}:127.0.0.1"),
    ):
        got = curl(
            "--http1.1", "--cacert", cafile, "--resolve", resolve, "-w", "\n%{http_version}", url
        )
        assert got.returncode == 0, got.stderr
        body, _, version = got.stdout.rpartition("\n")
        assert version == "1.1"
        seen = httpx.Response(200, content=body).json()
        assert seen["path"] == "/x"
        headers = {k.lower(): v for k, v in seen["headers"]}
        assert headers["x-forwarded-proto"] == "https"
    # The plain listener works beside it, and tells the app http.
    plain = httpx.get(f"{proxy.url}/app1/x").json()
    assert {k.lower(): v for k, v in plain["headers"]}["x-forwarded-proto"] == "http"


def test_https_with_httpx_post_and_a_large_download(
    tmp: Path, https_proxy: tuple[Proxy, int]
) -> None:
    _, port = https_proxy
    verify_ctx = ssl.create_default_context(cafile=str(tmp / "ca" / ca.CA_CERT))
    with httpx.Client(verify=verify_ctx, timeout=20) as client:
        url = f"https://localhost:{port}/app1"
        assert client.post(f"{url}/upload", content=b"y" * 3_000_000).text == "3000000"
        got = client.get(f"{url}/big?mb=8")
        assert got.status_code == 200
        assert len(got.content) == 8 * 1024 * 1024
        assert client.get(f"{url}/x").json()["path"] == "/x"  # the same connection, kept


def test_a_foreign_name_gets_no_certificate_and_others_carry_on(
    tmp: Path, https_proxy: tuple[Proxy, int]
) -> None:
    proxy, port = https_proxy
    cafile = str(tmp / "ca" / ca.CA_CERT)
    refused = curl(
        "--cacert",
        cafile,
        "--resolve",
        f"example.com:{port}:127.0.0.1",
        f"https://example.com:{port}/app1/",
    )
    assert refused.returncode != 0
    proxy.wait_for_output(r"refused a certificate for 'example\.com'")
    ok = curl("--cacert", cafile, f"https://localhost:{port}/app1/x")
    assert ok.returncode == 0, ok.stderr


def test_the_ca_lives_in_xdg_data_home_not_the_workdir(tmp: Path, starlette_sock: Path) -> None:
    path = write_config(
        tmp / "sockgate.toml",
        'listen = "127.0.0.1:0"\nworkdir = "work"\n'
        f'[apps.app1]\nsocket = "{starlette_sock}"\n[tls]\nlisten = "127.0.0.1:0"\n',
    )
    data = tmp / "data"
    with Proxy(path, env={"XDG_DATA_HOME": str(data)}) as proxy:
        proxy.wait_for_output(HTTPS_LINE)
    assert (data / "sockgate" / "ca" / ca.CA_KEY).exists()
    found = [p.name for p in (tmp / "work").rglob("*") if p.suffix == ".pem"]
    assert found == []


def test_websocket_over_tls(tmp: Path, https_proxy: tuple[Proxy, int]) -> None:
    """Browsers open WebSockets over HTTP/1.1 (sockgate offers no RFC 8441 over HTTP/2)."""
    _, port = https_proxy
    context = ssl.create_default_context(cafile=str(tmp / "ca" / ca.CA_CERT))
    url = f"wss://localhost:{port}/app1/ws"
    with connect(url, ssl=context, open_timeout=10, close_timeout=30) as ws:
        ws.send("over tls")
        assert ws.recv(timeout=10) == "echo: over tls"
        # After the closing handshake the TCP connection ends at once: TLS has no half-close
        # to wait on (before, the client waited out its whole close timeout).
        started = time.monotonic()
    assert time.monotonic() - started < 15


def test_status_lists_the_https_urls(https_proxy: tuple[Proxy, int]) -> None:
    proxy, port = https_proxy
    doc = httpx.get(f"{proxy.url}/_sockgate/status.json", timeout=10).json()
    (app,) = doc["apps"]
    assert app["urls"][2:] == [
        f"https://127.0.0.1:{port}/app1/",
        f"https://app1.localhost:{port}/",
    ]


# --- sockgate check


def check_config(tmp: Path, tls_listen: str) -> Path:
    return write_config(
        tmp / "sockgate.toml",
        'listen = "127.0.0.1:0"\nworkdir = "work"\n'
        f'[tls]\nlisten = "{tls_listen}"\nca_dir = "{tmp / "ca"}"\n',
    )


def test_check_probes_the_https_address_and_the_ca_without_making_it(tmp: Path) -> None:
    check_config(tmp, f"127.0.0.1:{free_port()}")
    run = run_sockgate("check", cwd=tmp)
    assert run.returncode == 0, run.stdout + run.stderr
    assert re.search(r"^https 127\.0\.0\.1:\d+: free$", run.stdout, re.M), run.stdout
    assert "local CA: none yet in" in run.stdout
    assert not (tmp / "ca").exists()  # check changes nothing
    ca.load_or_create(tmp / "ca", ("localhost",))
    run = run_sockgate("check", cwd=tmp)
    assert re.search(r"local CA .*ca\.pem \(until \d{4}-.*\): signs only localhost", run.stdout)


def test_check_fails_when_the_https_port_is_taken_or_the_key_is_open(tmp: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        check_config(tmp, f"127.0.0.1:{port}")
        run = run_sockgate("check", cwd=tmp)
    assert run.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}: address already in use" in run.stderr
    assert "change `tls.listen`" in run.stderr
    check_config(tmp, f"127.0.0.1:{free_port()}")
    ca.load_or_create(tmp / "ca", ("localhost",))
    (tmp / "ca" / ca.CA_KEY).chmod(0o640)
    run = run_sockgate("check", cwd=tmp)
    assert run.returncode == 2
    assert "readable by other users" in run.stderr


def test_https_with_workers(tmp: Path, starlette_sock: Path) -> None:
    """Each worker listens on the HTTPS port too (SO_REUSEPORT) with the one CA."""
    tls_port = free_port()
    path = write_config(
        tmp / "sockgate.toml",
        f'listen = "127.0.0.1:{free_port()}"\nworkdir = "work"\nworkers = 2\n'
        f'[apps.app1]\nsocket = "{starlette_sock}"\n'
        f'[tls]\nlisten = "127.0.0.1:{tls_port}"\nca_dir = "{tmp / "ca"}"\n',
    )
    with Proxy(path) as proxy:
        proxy.wait_for_output("2 worker processes")
        verify_ctx = ssl.create_default_context(cafile=str(tmp / "ca" / ca.CA_CERT))
        for _ in range(8):  # new connections, spread over the workers by the kernel
            with httpx.Client(verify=verify_ctx, http2=True, timeout=10) as client:
                got = client.get(f"https://localhost:{tls_port}/app1/x")
                assert got.http_version == "HTTP/2"
                assert got.json()["path"] == "/x"


async def absolute_redirect(conn: Conn) -> None:
    """Redirects as an app told X-Forwarded-Proto and Host builds them: absolute URLs."""
    while (request := await conn.request()) is not None:
        scheme = request.header(b"x-forwarded-proto") or b"http"
        host = request.header(b"host") or b"?"
        await conn.send(
            b"HTTP/1.1 302 Found\r\nLocation: %s://%s/login\r\nContent-Length: 0\r\n\r\n"
            % (scheme, host)
        )


def test_absolute_redirects_to_the_https_origin_stay_under_the_prefix(
    tmp: Path, raw_app: RawFactory
) -> None:
    app = raw_app(absolute_redirect)
    with https_sockgate(tmp, {"app1": app.path}) as (proxy, port):
        cafile = str(tmp / "ca" / ca.CA_CERT)
        for version in ("--http1.1", "--http2"):
            got = curl(
                version,
                "--cacert",
                cafile,
                "-o",
                "/dev/null",
                "-w",
                "%{redirect_url}",
                f"https://localhost:{port}/app1/x",
            )
            assert got.stdout == f"https://localhost:{port}/app1/login", (version, got.stderr)
        plain = httpx.get(f"{proxy.url}/app1/x", timeout=10)
        assert plain.headers["location"] == f"http://127.0.0.1:{proxy.port}/app1/login"
