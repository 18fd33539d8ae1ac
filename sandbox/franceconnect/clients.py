"""Service providers (OIDC clients) of the built-in FranceConnect, declared by settings.

`SANDBOX_FRANCECONNECT_CLIENTS` holds `client_id:secret` entries separated by `;`, each
optionally followed by `=uri,uri`: the only redirect (and post-logout) addresses it accepts.
A client without a list accepts any address, as the default client `sandbox` (secret
`sandbox`) does unless it is declared again with a list.
"""
from __future__ import annotations

import hmac
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..settings import ConfigError

DEFAULT_ID = DEFAULT_SECRET = "sandbox"
_UNSAFE_SCHEMES = {"javascript", "data", "vbscript", "file", "blob"}


@dataclass(frozen=True)
class Client:
    id: str
    secret: str
    redirect_uris: tuple = ()  # empty: any address

    def check_secret(self, secret: str | None) -> bool:
        return secret is not None and hmac.compare_digest(self.secret.encode(), secret.encode())

    def accepts(self, uri: str | None) -> bool:
        if not uri or len(uri) > 2048:
            return False
        if self.redirect_uris:
            return uri in self.redirect_uris
        parts = urlsplit(uri)
        # any absolute address, native apps' own schemes included; never one that runs code
        return bool(parts.scheme) and parts.scheme.lower() not in _UNSAFE_SCHEMES and not parts.fragment \
            and (bool(parts.netloc) or parts.scheme.lower() not in ("http", "https"))


def parse_clients(value: str | None) -> dict:
    clients = {DEFAULT_ID: Client(DEFAULT_ID, DEFAULT_SECRET)}
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
        clients[client_id] = Client(client_id, secret, redirect_uris)
    return clients
