"""The exception tree, and the one table that maps a fault to the HTTP status a client sees."""

from __future__ import annotations

from http import HTTPStatus
from pathlib import Path


class SockgateError(Exception):
    """Base of every error sockgate raises on purpose."""


class ConfigError(SockgateError):
    """The configuration is invalid. The message names the file, the key and what was expected."""

    def __init__(self, message: str, *, source: str = "", key: str = "") -> None:
        self.source = source
        self.key = key
        where = ": ".join(part for part in (source, key) if part)
        super().__init__(f"{where}: {message}" if where else message)


# --- faults of a client's request -------------------------------------------------------------


class ClientError(SockgateError):
    """The client sent something we refuse to forward. `status` is what it gets back."""

    status = HTTPStatus.BAD_REQUEST


class BadRequest(ClientError):
    status = HTTPStatus.BAD_REQUEST


class UriTooLong(ClientError):
    status = HTTPStatus.REQUEST_URI_TOO_LONG


class HeadTooLarge(ClientError):
    status = HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE


class MethodNotAllowed(ClientError):
    status = HTTPStatus.METHOD_NOT_ALLOWED


class VersionNotSupported(ClientError):
    status = HTTPStatus.HTTP_VERSION_NOT_SUPPORTED


class BodyTooLarge(ClientError):
    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


class ClientTimeout(ClientError):
    status = HTTPStatus.REQUEST_TIMEOUT


class ClientGone(SockgateError):
    """The client closed or reset its connection; nobody is left to answer."""


# --- faults on the way to an app ---------------------------------------------------------------


class UpstreamError(SockgateError):
    """Talking to an app failed. `fault` is a short name used in pages, logs and `check`."""

    fault = "upstream error"
    state = "error"  # the short word `sockgate check` shows
    # The app is down or between two runs: worth holding a request for (per-app `hold`), and a
    # browser is better served by a page that retries on its own.
    restarting = False

    def __init__(self, app: str, socket: str, detail: str = "") -> None:
        self.app = app
        self.socket = socket
        self.detail = detail
        text = f"app {app!r} at {socket}: {self.fault}"
        super().__init__(f"{text} ({detail})" if detail else text)


class SocketMissing(UpstreamError):
    fault = "socket file missing"
    state = "missing"
    restarting = True


class NotASocket(UpstreamError):
    fault = "not a socket"
    state = "not a socket"


class NothingListening(UpstreamError):
    fault = "nothing listening (stale socket file)"
    state = "stale"
    restarting = True


class ConnectReset(UpstreamError):
    """The app closed the connection as it was being made: it stopped with it in its queue."""

    fault = "connection reset as it was made"
    state = "stopping"
    restarting = True


class SocketPermissionDenied(UpstreamError):
    fault = "permission denied"
    state = "permission denied"


class SocketPathTooLong(UpstreamError):
    fault = "socket path too long"
    state = "path too long"


class ConnectFailed(UpstreamError):
    fault = "connect failed"


class ConnectTimeout(UpstreamError):
    fault = "timed out connecting"
    state = "timeout"


class AppClosedEarly(UpstreamError):
    fault = "app closed the connection without answering"


class AppBadResponse(UpstreamError):
    fault = "app answered something that is not valid HTTP"


class AppReadTimeout(UpstreamError):
    fault = "app did not answer in time"


class AppSendTimeout(UpstreamError):
    fault = "app stopped reading the request body"


class AppCutShort(UpstreamError):
    """The response had started; the only honest thing left is to close the client connection."""

    fault = "app cut the response short"


class AppNotRunning(UpstreamError):
    """A supervised app that is down right now: failed to start, or waiting to restart."""

    fault = "app is not running"
    state = "not running"


class AppRetired(UpstreamError):
    """A reload removed the app (or moved its socket) and the drain deadline passed."""

    fault = "app removed by a reload"


class NginxConfigRejected(SockgateError):
    """`nginx -t` refused the rendered config; `message` is what nginx said."""

    def __init__(self, conf: Path, message: str) -> None:
        self.conf = conf
        self.message = message
        super().__init__(f"nginx rejected {conf}:\n{message}")


_STATUS: dict[type[UpstreamError], HTTPStatus] = {
    AppNotRunning: HTTPStatus.SERVICE_UNAVAILABLE,
    ConnectTimeout: HTTPStatus.GATEWAY_TIMEOUT,
    AppReadTimeout: HTTPStatus.GATEWAY_TIMEOUT,
    AppSendTimeout: HTTPStatus.GATEWAY_TIMEOUT,
}


def status_for(error: SockgateError, *, navigation: bool = False) -> HTTPStatus:
    """The status a client gets for `error`: the one place this rule lives. A browser's
    navigation to an app that is down gets 503 (with a page that retries), others 502."""
    if isinstance(error, ClientError):
        return error.status
    if isinstance(error, UpstreamError):
        if navigation and error.restarting:
            return HTTPStatus.SERVICE_UNAVAILABLE
        return _STATUS.get(type(error), HTTPStatus.BAD_GATEWAY)
    return HTTPStatus.INTERNAL_SERVER_ERROR
