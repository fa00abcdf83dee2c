"""What every request to the app must pass: its Host, and for a change its origin, the session token and a bounded JSON body.

The app listens on loopback, but every web page the user opens can still reach it:
through the browser (a cross-site ``fetch`` or form POST to ``127.0.0.1``) and by DNS
rebinding (a site that points its own name at ``127.0.0.1`` and then reads the answers
as same-origin). :class:`Guard` is the one ASGI middleware in front of every route:

1. ``Host`` must be one of the app's own addresses *with the port it listens on*
   (:func:`allowed_hosts`): a rebinding page sends its own name, and is refused (400).
2. A change (any method but GET, HEAD and OPTIONS) must come from the app's own origin:
   an ``Origin`` other than ``http://`` + the Host, or without one a ``Sec-Fetch-Site``
   other than ``same-origin``, is refused (403).
3. A change must carry the session token (``X-Sic-Token``), random per start and written
   into the page the app serves, which no other origin can read (403).
4. A change must be ``Content-Type: application/json`` (415): no request a page can send
   without a CORS preflight (form posts, ``text/plain``) can change anything.
5. A change's body is bounded by its ``Content-Length`` and again while it streams (413),
   so an oversized body is refused before it is held in memory.

Every answer also carries ``Cross-Origin-Resource-Policy: same-origin`` (another site
cannot even embed a tile) and ``X-Content-Type-Options: nosniff``.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
import secrets
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["Guard", "TOKEN_HEADER", "allowed_hosts", "new_token", "parse_host", "shown"]

#: The header the page sends its session token in.
TOKEN_HEADER = "x-sic-token"
#: The names and addresses of this machine a browser uses for a loopback app.
LOOPBACK = ("localhost", "127.0.0.1", "[::1]")
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*", re.IGNORECASE)
_HEADERS = [(b"cross-origin-resource-policy", b"same-origin"), (b"x-content-type-options", b"nosniff")]


def new_token() -> str:
    """A fresh session token: 32 random bytes, URL-safe base64."""
    return secrets.token_urlsafe(32)


def parse_host(text: str) -> tuple[str, int | None] | None:
    """``name[:port]`` as the browser writes it in ``Host`` (IPv6 in brackets), lowercased; None if it is not one."""
    text = text.strip().lower()
    match = re.fullmatch(r"(\[[0-9a-f:.]+\]|[^:\[\]]+)(?::([0-9]{1,5}))?", text)
    if match is None:
        return None
    name, port = match.group(1), match.group(2)
    if name.startswith("["):
        try:
            ipaddress.IPv6Address(name[1:-1])
        except ValueError:
            return None
    elif not _NAME.fullmatch(name):
        return None
    if port is not None and not 0 < int(port) <= 65535:
        return None
    return name, None if port is None else int(port)


def allowed_hosts(port: int, remote: Iterable[str] = ()) -> frozenset[str]:
    """The ``Host`` values the app answers: each loopback name with ``port``, and each of ``remote``.

    A name in ``remote`` without a port gets ``port``; one with a port keeps it (an SSH
    tunnel that forwards another port). Ports 80 and 443 also allow the bare name, since
    browsers leave the default port out of ``Host``.

    Raises
    ------
    ValueError
        A name in ``remote`` that is not a host name or address.
    """
    hosts = set()
    for name in (*LOOPBACK, *remote):
        parsed = parse_host(name)
        if parsed is None:
            raise ValueError(f"{name!r} is not a host name or address")
        host, own = parsed
        own = port if own is None else own
        hosts.add(f"{host}:{own}")
        if own in (80, 443):
            hosts.add(host)
    return frozenset(hosts)


class Guard:
    """ASGI middleware: refuses a foreign ``Host`` everywhere, and a change that is not the app page's own.

    Parameters
    ----------
    app : ASGI application
    token : str
        The session token every change must carry in ``X-Sic-Token``.
    remote : iterable of str, default=()
        Host names (``name`` or ``name:port``) allowed besides the loopback ones
        (``sic-share app --allow-remote``).
    body_limit : int, default=1 MiB
        Most bytes a change's body may have.
    limits : mapping of str to int, optional
        Larger or smaller limits for some paths (a seeds file).

    Notes
    -----
    The port the Host must carry is the one the connection came in on (ASGI
    ``scope["server"]``), so the rule holds for ``--port 0`` too. Refusals are JSON
    ``{"error": sentence}``, as the page shows every error.
    """

    def __init__(self, app: Any, *, token: str, remote: Iterable[str] = (), body_limit: int = 1 << 20,
                 limits: Mapping[str, int] | None = None) -> None:
        self.app = app
        self.token = token
        self.remote = tuple(remote)
        allowed_hosts(0, self.remote)  # a bad name fails here, not at the first request
        self.body_limit = body_limit
        self.limits = dict(limits or {})
        self._hosts: dict[int, frozenset[str]] = {}

    def _allowed(self, port: int) -> frozenset[str]:
        if port not in self._hosts:
            self._hosts[port] = allowed_hosts(port, self.remote)
        return self._hosts[port]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *_HEADERS]}
            await send(message)

        refusal = self._check(scope)
        if refusal is not None:
            await _refuse(send_with_headers, *refusal)
            return
        if scope["method"] in _SAFE_METHODS:
            await self.app(scope, receive, send_with_headers)
            return
        limit = self.limits.get(scope["path"], self.body_limit)
        received = 0
        started = False

        async def receive_bounded() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _TooLarge
            return message

        async def send_tracked(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send_with_headers(message)

        try:
            await self.app(scope, receive_bounded, send_tracked)
        except _TooLarge:
            if started:
                raise
            await _refuse(send_with_headers, 413, _too_large(f"more than {limit} bytes", limit))

    def _check(self, scope: dict[str, Any]) -> tuple[int, str] | None:
        headers: dict[str, str] = {}
        for key, value in scope.get("headers", []):
            headers.setdefault(key.decode("latin-1").lower(), value.decode("latin-1"))
        server = scope.get("server")
        port = server[1] if server and server[1] is not None else None
        host = headers.get("host", "")
        parsed = parse_host(host)
        if port is None or parsed is None or _host_text(parsed) not in self._allowed(port):
            own = f"http://127.0.0.1:{port}/" if port else "the address 'sic-share app' printed"
            named = shown(host) if host else "(none)"
            return 400, (f"Host {named} is not this app's address: open {own}, or start the app with "
                         "--allow-remote NAME for a name other machines use to reach it")
        if scope["method"] in _SAFE_METHODS:
            return None
        own_origin = _host_text(parsed)
        origin = headers.get("origin")
        if origin is not None:
            match = re.fullmatch(r"(https?)://([^/]+)", origin.strip().lower())
            seen = parse_host(match.group(2)) if match else None
            if seen is None or _host_text(seen) != own_origin:
                return 403, (f"a change from {shown(origin)} is refused: only the app's own page "
                             f"(http://{own_origin}) may change the session")
        else:
            site = headers.get("sec-fetch-site")
            if site is not None and site.strip().lower() != "same-origin":
                return 403, (f"a change from another site (Sec-Fetch-Site: {shown(site)}) is refused: only the "
                             f"app's own page (http://{own_origin}) may change the session")
        token = headers.get(TOKEN_HEADER)
        if token is None:
            return 403, ("a change without the session token is refused: make it from the app's page, which "
                         "sends the token (X-Sic-Token) with each change")
        if not hmac.compare_digest(token.encode("latin-1"), self.token.encode("latin-1")):
            return 403, ("the session token (X-Sic-Token) is not this app's: reload the page (the app was "
                         "restarted since it loaded)")
        media = headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json":
            return 415, (f"a change must be sent as application/json, not {shown(media or '(no type)')}: "
                         "send the JSON the page sends")
        length = headers.get("content-length")
        limit = self.limits.get(scope["path"], self.body_limit)
        if length is not None:
            if not length.strip().isdigit():
                return 400, f"Content-Length {shown(length)} is not a number of bytes"
            if int(length) > limit:
                return 413, _too_large(f"{int(length)} bytes", limit)
        return None


class _TooLarge(Exception):
    """Raised inside the app by the bounded ``receive``: the body passed its limit while streaming."""


def _host_text(parsed: tuple[str, int | None]) -> str:
    return parsed[0] if parsed[1] is None else f"{parsed[0]}:{parsed[1]}"


def _too_large(size: str, limit: int) -> str:
    return (f"a request body of {size} is over the app's limit of {limit} bytes ({limit / 2**20:.1f} MiB): "
            "send fewer patches or seeds at a time")


def shown(value: Any, most: int = 40) -> str:
    """``repr(value)`` cut to ``most`` characters, for error sentences (a body can hold a 4,000-digit number)."""
    text = repr(value)
    return text if len(text) <= most else text[: most - 3] + "..."


async def _refuse(send: Any, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": body})
