"""Service providers (OIDC clients) of the built-in FranceConnect, declared by settings.

`SANDBOX_FRANCECONNECT_CLIENTS` holds `client_id:secret` entries separated by `;`, each
optionally followed by `=uri,uri`: the only redirect (and post-logout) addresses it accepts.
A client without a list accepts any address, as the default client `sandbox` (secret
`sandbox`) does unless it is declared again with a list; except where the operator limits
them (`SANDBOX_FRANCECONNECT_REDIRECTS`, and always on a public instance): then a client
without a list sends a browser back only to a listed origin or address, to loopback, or to the
sandbox's own origin (the "try it" page's callback), so that no one can use the sandbox to
bounce a visitor to a site of their choosing (an open redirect).
"""
from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..settings import ConfigError

DEFAULT_ID = DEFAULT_SECRET = "sandbox"
_UNSAFE_SCHEMES = {"javascript", "data", "vbscript", "file", "blob"}
_WEB = ("http", "https")


@dataclass(frozen=True)
class Client:
    id: str
    secret: str
    redirect_uris: tuple = ()  # empty: any address (within `limited_to`)
    limited_to: tuple | None = None  # (scheme, host[:port], path) the operator allows; None: no limit

    def check_secret(self, secret: str | None) -> bool:
        return secret is not None and hmac.compare_digest(self.secret.encode(), secret.encode())

    def accepts(self, uri: str | None, own_origin: str | None = None) -> bool:
        if not uri or len(uri) > 2048:
            return False
        if self.redirect_uris:
            return uri in self.redirect_uris
        parts = urlsplit(uri)
        # any absolute address, native apps' own schemes included; never one that runs code
        if not (bool(parts.scheme) and parts.scheme.lower() not in _UNSAFE_SCHEMES and not parts.fragment
                and (bool(parts.netloc) or parts.scheme.lower() not in _WEB)):
            return False
        return self.limited_to is None or _allowed(uri, parts, self.limited_to, own_origin)


def _allowed(uri: str, parts, allowed: tuple, own_origin: str | None) -> bool:
    # A browser reads `\` as `/` and skips what precedes `@`: such an address may go elsewhere
    # than it seems, so it is never among the allowed ones.
    if parts.scheme.lower() not in _WEB or "@" in parts.netloc or any(c in uri for c in "\\ \t\r\n"):
        return False
    scheme, netloc = parts.scheme.lower(), parts.netloc.lower()
    if _loopback(parts.hostname):
        return True
    if own_origin and f"{scheme}://{netloc}" == own_origin.rstrip("/").lower():
        return True
    return any(scheme == s and netloc == n and (path in ("", "/") or parts.path == path) for s, n, path in allowed)


def _loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def parse_redirects(value: str | None) -> tuple:
    """`https://app.example.fr, https://other.fr/callback` -> (scheme, host[:port], path):
    an origin allows every address on it, an address with a path that address only."""
    out = []
    for entry in (value or "").split(","):
        entry = entry.strip()
        if not entry:
            continue
        parts = urlsplit(entry)
        if parts.scheme.lower() not in _WEB or not parts.netloc or "@" in parts.netloc or parts.query or parts.fragment:
            raise ConfigError("SANDBOX_FRANCECONNECT_REDIRECTS expects origins (https://app.example.fr) or addresses "
                              f"without query, separated by commas; got {entry!r}")
        out.append((parts.scheme.lower(), parts.netloc.lower(), parts.path))
    return tuple(out)


def parse_clients(value: str | None, limited_to: tuple | None = None) -> dict:
    """`limited_to`: where a client without its own list may send a browser back (parse_redirects),
    None for anywhere."""
    clients = {DEFAULT_ID: Client(DEFAULT_ID, DEFAULT_SECRET, limited_to=limited_to)}
    for entry in (value or "").split(";"):
        entry = entry.strip()
        if not entry:
            continue
        credentials, _, uris = entry.partition("=")
        client_id, sep, secret = credentials.partition(":")
        if not sep or not client_id or not secret:
            raise ConfigError("SANDBOX_FRANCECONNECT_CLIENTS expects client_id:secret[=uri,uri] entries "
                              f"separated by ';', got {entry[:12]}...")
        redirect_uris = tuple(u.strip() for u in uris.split(",") if u.strip())
        for uri in redirect_uris:
            if not Client("", "").accepts(uri):
                raise ConfigError(f"SANDBOX_FRANCECONNECT_CLIENTS: {uri!r} is not an absolute address")
        clients[client_id] = Client(client_id, secret, redirect_uris, None if redirect_uris else limited_to)
    return clients
