"""Token extraction and verification: sandbox JWTs, fixed opaque tokens, FranceConnect tokens.

Tokens are JWTs signed HS256 with the sandbox secret and carry production's claims
(uid, jti, scopes, sub, iat, exp, version), so the same token works on v2 and v3.
A verified token's Identity is cached: a PyJWT decode is a large share of a call
(bench/README.md) and CI farms call with the same few tokens; expiry is still checked on every
request. The cache is keyed by the token's hash() with its signature alongside, not by the
token, whose every-scope form is a few kilobytes. A hit needs the same hash AND the
same signature, which only the holder of that very token knows; an edited token hashes
elsewhere and is decoded, and refused.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import time
import uuid
from dataclasses import dataclass

import jwt

from ..production.errors import ApiError
from ..production.requests import bearer_token

ISSUER = "particulier-sandbox"
TOKEN_VERSION = "1.0"
_CACHE_LIMIT = 10_000


@dataclass(frozen=True)
class Identity:
    """Who is calling: the key the rate limit and the journal use, and the scopes held."""
    key: str                      # jti, or a digest of an opaque / FranceConnect token
    scopes: frozenset
    kind: str                     # "jwt", "static" or "france_connect"
    name: str = ""
    france_connect: dict | None = None  # FranceConnect identity (token_introspection)
    expires_at: int | None = None


def mint(secret: str, scopes, ttl: int, now: float | None = None) -> tuple[str, dict]:
    now = int(now if now is not None else time.time())
    claims = {"uid": str(uuid.uuid4()), "jti": str(uuid.uuid4()), "scopes": sorted(set(scopes)),
              "sub": ISSUER, "iat": now, "exp": now + int(ttl), "version": TOKEN_VERSION}
    return jwt.encode(claims, secret, algorithm="HS256"), claims


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:32]


def extract(request, op) -> tuple[str | None, str | None]:
    """(token, where): Bearer, then X-Api-Key, then ?token=, on every version
    (siade/app/lib/user_resolution_middleware.rb); an empty value counts as none."""
    bearer = bearer_token(request.headers)
    if bearer:
        return bearer, "bearer"
    if request.headers.get("X-Api-Key"):
        return request.headers["X-Api-Key"], "api_key"
    if request.args.get("token"):
        return request.args["token"], "query_token"
    return None, None


class Authenticator:
    def __init__(self, secret: str, static_tokens: dict, france_connect: callable):
        self._secret = secret
        self._static = {digest(value): (value, frozenset(scopes)) for value, scopes in static_tokens.items()}
        self._france_connect = france_connect  # token -> identity payload or None
        self._cache: dict[int, tuple[str, Identity]] = {}  # hash(token) -> (signature, Identity)
        self._scope_sets: dict[frozenset, frozenset] = {}

    def verify(self, token: str) -> Identity:
        """A sandbox token (JWT or declared opaque token) -> Identity, or ApiError."""
        if self._static:
            static = self._static.get(digest(token))
            if static and hmac.compare_digest(static[0], token):
                return Identity(key="static-" + digest(token)[:16], scopes=static[1], kind="static")
        key, signature = hash(token), token[token.rfind(".") + 1:]
        cached = self._cache.get(key)
        if cached is not None and hmac.compare_digest(cached[0], signature):
            identity = cached[1]
        else:
            claims = self._decode(token)
            scopes = frozenset(claims["scopes"])
            scopes = self._scope_sets.setdefault(scopes, scopes)  # tokens minted alike share one set
            identity = Identity(key=claims["jti"], scopes=scopes, kind="jwt", expires_at=claims["exp"])
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
                self._scope_sets.clear()
            self._cache[key] = (signature, identity)
        if identity.expires_at <= time.time():
            raise ApiError("expired_token")
        return identity

    def _decode(self, token: str) -> dict:
        try:
            claims = jwt.decode(token, self._secret, algorithms=["HS256"],
                                options={"require": ["jti", "exp", "iat"], "verify_exp": False})
        except jwt.PyJWTError:
            raise ApiError("invalid_token") from None
        if not isinstance(claims.get("scopes"), list) or not isinstance(claims.get("jti"), str):
            raise ApiError("invalid_token")
        return claims

    oidc = None  # the built-in FranceConnect (sandbox.franceconnect), set when its blueprint is made

    def france_connect(self, token: str) -> Identity | None:
        identity = self._france_connect(token)
        if identity is None:
            # an access token of the built-in FranceConnect: its Identity, or ApiError when expired/revoked
            return self.oidc.api_identity(token) if self.oidc is not None else None
        scopes = frozenset(str(identity.get("scope", "")).split())
        return Identity(key="fc-" + digest(token)[:16], scopes=scopes, kind="france_connect",
                        france_connect=identity)

    def authenticate(self, request, op) -> Identity:
        """The pipeline's auth step for an API route, in production's order
        (concerns/api_particulier/france_connectable.rb, concerns/handle_tokens.rb)."""
        token, where = extract(request, op)
        if op.france_connect and where == "bearer":
            # any Bearer on a FranceConnect-capable route is a FranceConnect token: an API
            # Particulier token sent there as Bearer is refused, as production does
            identity = self.france_connect(token)
            if identity is None:
                raise ApiError("france_connect_unknown")
            return identity
        if op.france_connect_only and token:
            # production's controller then reads a FranceConnect identity it does not have and
            # fails with a 500: no call succeeds this way; the sandbox says why instead
            raise ApiError("invalid_token", detail="Cette route n'accepte qu'un jeton FranceConnect, dans "
                                                   "Authorization: Bearer (production échoue ici en erreur 500).")
        if not token:
            raise ApiError("missing_token")
        try:
            return self.verify(token)
        except ApiError as error:
            # production resolves a token that fails by trying ?token= then the Bearer again
            # (handle_tokens.rb, extract_user_from_token)
            fallback = request.args.get("token")
            if error.kind != "invalid_token" or where == "query_token" or not fallback:
                raise
            return self.verify(fallback)
