"""Response headers of an app under a stripped prefix, made to point inside that prefix.

Pure (layer 1): bytes in, bytes out. An app behind `/app1/` with the prefix stripped believes it
lives at `/`; its redirects and cookies say so. The rule table (also in docs/prefix-apps.md):

| the app sends                                   | the client gets                       |
|-------------------------------------------------|---------------------------------------|
| `Location: /login?next=/x#top` (root-relative)  | `/app1/login?next=/x#top`             |
| `Location: /`                                   | `/app1/`                              |
| `Location: http://HOST/login` (own origin)      | `http://HOST/app1/login`              |
| `Location: https://HOST/login`, over HTTPS (own origin) | `https://HOST/app1/login`     |
| `Location: http://HOST` or `http://HOST?q`      | `http://HOST/app1/` (`?q` kept)       |
| `Location: /app1`, `/app1/x`, `http://HOST/app1/x` (already under the prefix) | unchanged |
| `Location: /app10/x` (only looks like the prefix) | `/app1/app10/x`                     |
| `Location: login`, `../x`, `?q`, `#f`, empty    | unchanged (relative)                  |
| `Location: //other.example/x` (scheme-relative) | unchanged (another origin)            |
| `Location: https://HOST/x` over HTTP, `http://HOST/x` over HTTPS | unchanged (another origin) |
| `Location: http://other/x`, `http://user@HOST/x` | unchanged (another origin)          |
| `Refresh: 5; url=/x` (also `URL = '/x'`, `5, /x`) | the URL part as Location; the rest kept |
| `Set-Cookie: a=1; Path=/`                       | `a=1; Path=/app1/`                    |
| `Set-Cookie: a=1; path=/x; HttpOnly`            | `a=1; path=/app1/x; HttpOnly`         |
| `Set-Cookie: a=1; Path="/x"`                    | `a=1; Path="/app1/x"` (quotes kept)   |
| `Set-Cookie: a=1; Path=/app1/x`, no Path, `Path=x` | unchanged                          |

HOST is the request's own Host header as the client sent it (the proxy's origin as the browser
sees it, with the scheme of the listener it came in on), compared without regard to case; `:80`
is the same origin as no port for http, `:443` for https. "Under the prefix"
means the path is the mount (`/app1`) or starts with the mount and `/`, so `/app10` is not under
`/app1`. Every rule is idempotent: what it produces is under the prefix and left alone next time.
"""

from __future__ import annotations

import re
from typing import Final

# Header names (lower case) whose values this module rewrites.
REWRITTEN: Final = frozenset({b"location", b"refresh", b"set-cookie"})

# HTML's declarative refresh: a time, optional `;` or `,`, optional `url=`, then the URL,
# possibly quoted. Group 1 is everything before the URL, group 2 the quote, group 3 the rest.
_REFRESH: Final = re.compile(rb"(\s*[0-9.]+\s*[;,]?\s*(?:url\s*=\s*)?)(['\"]?)(.*)", re.I | re.S)
_DEFAULT_PORTS: Final = {b"http": b":80", b"https": b":443"}


def response_header(
    lower: bytes, value: bytes, mount: bytes, host: bytes | None, scheme: bytes = b"http"
) -> bytes:
    """The value the client gets for a header named `lower` (one of REWRITTEN); `host` and
    `scheme` are the request's (the origin the client sees)."""
    if lower == b"set-cookie":
        return set_cookie(value, mount)
    if lower == b"location":
        return location(value, mount, host, scheme)
    return refresh(value, mount, host, scheme)


def location(url: bytes, mount: bytes, host: bytes | None, scheme: bytes = b"http") -> bytes:
    """A URL the browser is sent to, moved under `mount` when it points at the app's own root."""
    if url.startswith(b"/"):
        if url.startswith(b"//"):
            return url  # scheme-relative: another origin
        return _under(url, mount)
    own = scheme + b"://"
    if host is None or url[: len(own)].lower() != own:
        return url
    rest = url[len(own) :]
    end = _authority_end(rest)
    if _origin(rest[:end], scheme) != _origin(host, scheme):
        return url
    return url[: len(own) + end] + _under(rest[end:] or b"/", mount, empty_path=True)


def refresh(value: bytes, mount: bytes, host: bytes | None, scheme: bytes = b"http") -> bytes:
    """`N; url=TARGET` (and HTML's other spellings) with TARGET rewritten as a Location."""
    match = _REFRESH.fullmatch(value)
    if match is None or not match.group(3):
        return value
    lead, quote, rest = match.groups()
    end = rest.find(quote) if quote else -1
    # As HTML reads it: a quoted URL ends at the same quote, or at the end of the value.
    url, tail = (rest[:end], rest[end:]) if end >= 0 else (rest, b"")
    return lead + quote + location(url, mount, host, scheme) + tail


def set_cookie(value: bytes, mount: bytes) -> bytes:
    """A cookie whose Path attribute names a path outside `mount` gets that path under it."""
    if b"path" not in value.lower():
        return value  # the common case: no Path attribute, nothing to split
    parts = value.split(b";")
    for i in range(1, len(parts)):  # parts[0] is name=value, never an attribute
        name, sep, path = parts[i].partition(b"=")
        if sep and name.strip().lower() == b"path":
            parts[i] = name + sep + _cookie_path(path, mount)
    return b";".join(parts)


def _cookie_path(raw: bytes, mount: bytes) -> bytes:
    stripped = raw.strip()
    lead = raw[: len(raw) - len(raw.lstrip())]
    trail = raw[len(raw.rstrip()) :]
    quote = b'"' if len(stripped) >= 2 and stripped[:1] == stripped[-1:] == b'"' else b""
    path = stripped[1:-1] if quote else stripped
    if not path.startswith(b"/"):
        return raw  # a browser ignores it and uses the request's directory, already under mount
    return lead + quote + _under(path, mount) + quote + trail


def _under(target: bytes, mount: bytes, *, empty_path: bool = False) -> bytes:
    """A root-relative target (path, query, fragment) moved under mount unless already there.
    With `empty_path`, a target that starts with `?` or `#` has an empty path (same as `/`)."""
    if empty_path and target[:1] in (b"?", b"#"):
        return mount + b"/" + target
    if target.startswith(mount) and target[len(mount) : len(mount) + 1] in (b"", b"/", b"?", b"#"):
        return target
    return mount + target


def _authority_end(rest: bytes) -> int:
    """Where the authority of `SCHEME://` + rest ends: at the first `/`, `?` or `#`."""
    ends = [i for i in (rest.find(b"/"), rest.find(b"?"), rest.find(b"#")) if i >= 0]
    return min(ends, default=len(rest))


def _origin(authority: bytes, scheme: bytes) -> bytes:
    """An authority compared as an origin: case-insensitive, the scheme's default port the
    same as no port."""
    lower = authority.lower()
    default = _DEFAULT_PORTS.get(scheme, b"")
    return lower[: -len(default)] if default and lower.endswith(default) else lower
