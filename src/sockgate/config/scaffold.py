"""What `sockgate init` writes: a commented sockgate.toml and the working-directory layout."""

from __future__ import annotations

from pathlib import Path

TEMPLATE = """\
# sockgate.toml: one local endpoint in front of apps on Unix sockets.
# Check it with `sockgate check`, run it with `sockgate run` (Ctrl-C stops it).

listen = "127.0.0.1:8080"     # HOST:PORT or [::1]:PORT; loopback keeps the apps off the network
workdir = "."                 # relative to this file: logs/, sockgate.pid, sockgate.ctl
# engine = "builtin"          # or "nginx": the same routes on user-mode nginx
# max_body_size = "100m"      # request bodies larger than this get 413; unlimited by default
# workers = 1                 # built-in engine: processes sharing the port
# allowed_hosts = []          # Host names answered besides localhost, *.localhost, 127.x, [::1]
# allow_remote = false        # true is needed to listen on a non-loopback address
# sockets_dir = "sockets"    # every NAME.sock in workdir/sockets is served at /NAME/
# dashboard = "/_sockgate/"   # built-in engine's status page (also at / if no app is); false: off

[timeouts]                    # seconds, or "500ms", "90s", "5m", "1h"
connect = "5s"                # connecting to an app's socket
read = "1h"                   # app silent this long: 504 before the response head, close after
send = "1h"                   # app (or client) not reading this long
client_header = "60s"         # a client must send a whole request head within this
keepalive = "75s"             # idle client keep-alive connection
shutdown = "5s"               # on Ctrl-C, how long requests under way may take to finish

# One table per app. /app1/foo reaches the app behind the socket as /foo.
[apps.app1]
socket = "~/app1/sock.sock"   # ~ and relative paths resolve against this file
# prefix = "/app1/"           # default "/<name>/"; "/" makes a catch-all app
# strip_prefix = true         # false: the app sees /app1/foo unchanged
# rewrite = true              # Location, Refresh and cookie paths moved under /app1/
# prefix_headers = ["X-Forwarded-Prefix", "X-Script-Name"]   # tell the app its prefix; [] none

# An app sockgate runs itself: started with `run`, restarted if it exits, stopped on Ctrl-C.
# [apps.notes]
# command = "uvicorn notes:app --uds {socket}"   # socket: workdir/sockets/notes.sock
# cwd = "~/src/notes"
# start = "on-demand"         # default "always"; on-demand stops it after idle_stop ("10m")

# HTTPS and HTTP/2 beside the plain listener, with certificates from sockgate's local CA, which
# can sign only localhost names; `sockgate trust` once makes browsers trust it (docs/https.md).
# [tls]
# listen = "127.0.0.1:8443"
"""


def write(config_path: Path, *, force: bool) -> list[Path]:
    """Write the template and create logs/; returns what was created. Raises FileExistsError."""
    if config_path.exists() and not force:
        raise FileExistsError(config_path)
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(TEMPLATE, encoding="utf-8")
    logs = config_path.parent / "logs"
    logs.mkdir(exist_ok=True)
    return [config_path, logs]
