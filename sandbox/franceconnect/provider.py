"""The OpenID Connect provider, as FranceConnect v2's integration environment behaves for a
service provider: what authorize requires, what the code, the tokens and userinfo carry, logout.

Everything a client holds is a signed, self-contained token (see keys.py), so an authorize on
one worker, the token call on another and an API call on a third all work. What must be
remembered is remembered in the shared store's revocation list: a code once redeemed
("code-<sid>"), a session logged out or a code replayed ("at-<sid>", its access token).
"""
from __future__ import annotations

import base64
import hashlib
import secrets
import time

from ..api.auth import Identity
from ..production.errors import ApiError
from ..store import StoreUnavailable
from . import keys
from .clients import parse_clients, parse_redirects

ACR = "eidas1"  # FranceConnect (not FranceConnect+) has one level
MIN_RANDOM = 32  # FranceConnect v2 wants state and nonce of at least 32 characters
CODE_TTL = 60
INTERACTION_TTL = 1800  # the picker and consent pages may stay open this long

# scope -> claims it releases (FranceConnect's identity scopes and their aliases)
IDENTITY_SCOPES = {
    "openid": ("sub",),
    "given_name": ("given_name", "given_name_array"),
    "family_name": ("family_name",),
    "birthdate": ("birthdate",),
    "gender": ("gender",),
    "birthplace": ("birthplace",),
    "birthcountry": ("birthcountry",),
    "email": ("email",),
    "preferred_username": ("preferred_username",),
    "profile": ("given_name", "given_name_array", "family_name", "birthdate", "gender", "preferred_username"),
    "birth": ("birthplace", "birthcountry"),
    "identite_pivot": ("given_name", "given_name_array", "family_name", "birthdate", "gender", "birthplace",
                       "birthcountry"),
}
IDENTITY_CLAIMS = ("given_name", "given_name_array", "family_name", "birthdate", "gender", "birthplace",
                   "birthcountry", "preferred_username")


class AuthorizeError(Exception):
    """An authorize request that fails. `redirect`: sent back to the client (error, error_description,
    state) rather than shown to the user, as OIDC wants once client and address are known."""

    def __init__(self, error: str, description: str, redirect: bool = True):
        super().__init__(description)
        self.error, self.description, self.redirect = error, description, redirect


class TokenError(Exception):
    def __init__(self, error: str, description: str, status: int = 400):
        super().__init__(description)
        self.error, self.description, self.status = error, description, status


def subject(client_id: str, citizen_id: str) -> str:
    """FranceConnect's sub: one per citizen and service provider (pairwise), 64 hex digits + 'v1'."""
    return hashlib.sha256(f"{client_id}\n{citizen_id}".encode()).hexdigest() + "v1"


def at_hash(access_token: str) -> str:
    """The id_token's at_hash, as FranceConnect's carry it (OpenID Connect Core 3.1.3.6): the left
    half of the access token's SHA-256 (the hash of RS256), base64url without padding."""
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[:len(digest) // 2]).rstrip(b"=").decode("ascii")


# The "try it" page explores by hand: it may ask (sandbox_ttl) for an access token living up to
# this long. Other clients get FranceConnect's own lifetime (SANDBOX_FRANCECONNECT_TTL, 60 s).
TRY_IT_MAX_TTL = 3600


class Provider:
    def __init__(self, settings, store, catalogue, personas):
        self.signer = keys.Signer(settings.data_dir)
        limited = settings.public or settings.franceconnect_redirects is not None
        self.clients = parse_clients(settings.franceconnect_clients,
                                     parse_redirects(settings.franceconnect_redirects) if limited else None)
        self.ttl = int(settings.franceconnect_ttl)
        self.longest_ttl = max(self.ttl, TRY_IT_MAX_TTL)  # no token of a session outlives this
        self.store = store
        self.personas = personas
        self.data_scopes = {s["name"]: s for s in catalogue.describe()}
        self._verified: dict[str, dict] = {}  # access token -> claims: an RSA check per call would cost more than the rest of the call (bench/README.md)

    # --- authorize -----------------------------------------------------------------------------
    def check_authorize(self, args, own_origin: str | None = None) -> dict:
        """The validated authorize request, or AuthorizeError. `own_origin`: the sandbox's, where
        a client limited by the operator may always come back (clients.py)."""
        client = self.clients.get(args.get("client_id") or "")
        if client is None:
            raise AuthorizeError("invalid_client", "client_id inconnu du bac à sable.", redirect=False)
        redirect_uri = args.get("redirect_uri")
        if not client.accepts(redirect_uri, own_origin):
            raise AuthorizeError("invalid_request", "redirect_uri absente ou non déclarée pour ce client.",
                                 redirect=False)
        request = {"client_id": client.id, "redirect_uri": redirect_uri, "state": args.get("state") or ""}
        if args.get("response_type") != "code":
            raise AuthorizeError("unsupported_response_type", "response_type doit valoir « code ».")
        scopes = list(dict.fromkeys((args.get("scope") or "").split()))
        if "openid" not in scopes:
            raise AuthorizeError("invalid_scope", "Le scope « openid » est obligatoire.")
        unknown = [s for s in scopes if s not in IDENTITY_SCOPES and s not in self.data_scopes]
        if unknown:
            raise AuthorizeError("invalid_scope", "Scopes inconnus : " + ", ".join(unknown))
        for name in ("state", "nonce"):
            value = args.get(name) or ""
            if len(value) < MIN_RANDOM:
                raise AuthorizeError("invalid_request", f"Le paramètre {name} est obligatoire et doit compter "
                                                        f"au moins {MIN_RANDOM} caractères.")
        acr = (args.get("acr_values") or "").split()
        if ACR not in acr:
            raise AuthorizeError("invalid_request", "acr_values doit valoir « eidas1 ».")
        prompt = set((args.get("prompt") or "").split())
        if prompt - {"none", "login", "consent"} or ("none" in prompt and len(prompt) > 1):
            raise AuthorizeError("invalid_request", "prompt accepte « login », « consent » ou « none ».")
        request.update(scope=scopes, nonce=args["nonce"], acr=ACR, prompt=sorted(prompt),
                       login_hint=args.get("login_hint") or "", consent=args.get("sandbox_consent"))
        if "none" in prompt:
            if not self.personas.current().citizens.get(request["login_hint"]):
                raise AuthorizeError("login_required", "prompt=none demande un login_hint qui nomme une personne "
                                                       "du bac à sable (voir /franceconnect/personas).")
        return request

    def data_scopes_of(self, request) -> list:
        return [s for s in request["scope"] if s in self.data_scopes]

    def interaction(self, request: dict) -> str:
        now = int(time.time())
        return self.signer.sign({**request, "iat": now, "exp": now + INTERACTION_TTL}, keys.INTERACTION)

    def read_interaction(self, blob) -> dict | None:
        return self.signer.read(blob, keys.INTERACTION)

    def consent(self, request: dict, citizen_id: str, data_scopes) -> str:
        """The code for this citizen consenting to `data_scopes` (a subset of those asked)."""
        citizen = self.personas.current().citizens.get(citizen_id)
        if citizen is None:
            raise AuthorizeError("access_denied", "Personne inconnue du bac à sable.")
        asked = set(self.data_scopes_of(request))
        granted = [s for s in request["scope"] if s in IDENTITY_SCOPES or (s in asked and s in set(data_scopes))]
        now = int(time.time())
        claims = {"aud": request["client_id"], "sid": secrets.token_urlsafe(18),
                  "redirect_uri": request["redirect_uri"], "scope": " ".join(granted), "nonce": request["nonce"],
                  "acr": request["acr"], "auth_time": now, "citizen": citizen.id,
                  "identity": {c: citizen.identity.get(c) for c in IDENTITY_CLAIMS + ("email",)},
                  "iat": now, "exp": now + CODE_TTL}
        return self.signer.sign(claims, keys.CODE)

    # --- token -----------------------------------------------------------------------------------
    def redeem(self, form, authorization: str | None, issuer: str, ttl: int | None = None) -> dict:
        """The tokens a code is worth. `ttl`: the tokens' lifetime when not FranceConnect's own
        (the "try it" page's longer one, views.py)."""
        ttl = ttl or self.ttl
        client_id, secret = form.get("client_id"), form.get("client_secret")
        if authorization and authorization.lower().startswith("basic "):
            from urllib.parse import unquote
            try:
                pair = base64.b64decode(authorization[6:].strip()).decode()
            except (ValueError, UnicodeDecodeError):
                raise TokenError("invalid_client", "En-tête Authorization illisible.", 401) from None
            client_id, _, secret = (unquote(p) for p in pair.partition(":"))
        client = self.clients.get(client_id or "")
        if client is None or not client.check_secret(secret):
            raise TokenError("invalid_client", "client_id ou client_secret invalide.", 401)
        if form.get("grant_type") != "authorization_code":
            raise TokenError("unsupported_grant_type", "grant_type doit valoir « authorization_code ».")
        code = self.signer.read(form.get("code") or "", keys.CODE)
        if code is None or code["aud"] != client.id:
            raise TokenError("invalid_grant", "Code d'autorisation invalide ou expiré.")
        if form.get("redirect_uri") != code["redirect_uri"]:
            raise TokenError("invalid_grant", "redirect_uri différente de celle de l'appel à authorize.")
        sid = code["sid"]
        try:
            if self.store.is_revoked("code-" + sid):
                self.store.revoke("at-" + sid, expires_at=time.time() + self.longest_ttl)  # a replayed code: what it gave is withdrawn too (RFC 6749 4.1.2)
                raise TokenError("invalid_grant", "Ce code d'autorisation a déjà été utilisé.")
            self.store.revoke("code-" + sid, expires_at=code.get("exp"))  # a code is worth nothing once expired
        except StoreUnavailable:
            raise TokenError("temporarily_unavailable", "Le stockage partagé du bac à sable est injoignable.",
                             503) from None
        now = int(time.time())
        sub = subject(client.id, code["citizen"])
        access = {"iss": issuer, "aud": client.id, "client_id": client.id, "sub": sub, "sid": sid,
                  "jti": "at-" + sid, "scope": code["scope"], "citizen": code["citizen"],
                  "identity": code["identity"], "iat": now, "exp": now + ttl}
        access_token = self.signer.sign(access, keys.ACCESS)
        id_token = {"iss": issuer, "sub": sub, "aud": client.id, "iat": now, "exp": now + ttl,
                    "nonce": code["nonce"], "acr": code["acr"], "amr": ["pwd"], "auth_time": code["auth_time"],
                    "sid": sid, "at_hash": at_hash(access_token)}
        return {"access_token": access_token, "token_type": "Bearer",
                "expires_in": ttl, "id_token": self.signer.sign(id_token, keys.ID_TOKEN),
                "scope": code["scope"]}

    # --- access tokens: userinfo and the API --------------------------------------------------------
    def access_claims(self, token: str) -> dict | None:
        """The claims of an access token we issued, expired or not; None when it is not ours."""
        claims = self._verified.get(token)
        if claims is None:
            claims = self.signer.read(token, keys.ACCESS, check_expiry=False)
            if claims is None:
                return None
            if len(self._verified) >= 10_000:
                self._verified.clear()
            self._verified[token] = claims
        return claims

    def live(self, claims: dict) -> bool:
        return claims["exp"] > time.time() and not self.store.is_revoked(claims["jti"])

    def userinfo(self, token: str, issuer: str) -> str | None:
        claims = self.access_claims(token or "")
        if claims is None or not self.live(claims):
            return None
        released = {"sub": claims["sub"]}
        for scope in claims["scope"].split():
            for claim in IDENTITY_SCOPES.get(scope, ()):
                if claim != "sub":
                    released[claim] = claims["identity"].get(claim)
        now = int(time.time())
        return self.signer.sign({"iss": issuer, "aud": claims["aud"], "iat": now, "exp": now + self.ttl,
                                 **released}, keys.USERINFO)

    def api_identity(self, token: str) -> Identity | None:
        """Authenticator.france_connect's hook: an access token of ours -> the caller; ours but
        expired or revoked -> production's 'not found or expired'; anything else -> None."""
        claims = self.access_claims(token)
        if claims is None:
            return None
        try:
            alive = self.live(claims)
        except StoreUnavailable:
            raise ApiError("store_unavailable") from None
        if not alive:
            raise ApiError("france_connect_unknown")
        introspection = {**claims["identity"], "active": True, "scope": claims["scope"], "sub": claims["sub"],
                         "aud": claims["aud"]}
        return Identity(key="fc-" + claims["sid"], scopes=frozenset(claims["scope"].split()), kind="france_connect",
                        name=claims["citizen"], france_connect=introspection, expires_at=claims["exp"])

    # --- logout ----------------------------------------------------------------------------------
    def end_session(self, args, own_origin: str | None = None) -> tuple[str | None, str]:
        """(where to send the user back, or None: show the page; error message or '')."""
        hint = self.signer.read(args.get("id_token_hint") or "", keys.ID_TOKEN, check_expiry=False)
        # a userinfo JWT has the id_token's `typ` but neither `sid` nor the session: not a hint
        if hint is None or not isinstance(hint.get("sid"), str) or not isinstance(hint.get("aud"), str):
            return None, "id_token_hint absent ou invalide."
        client = self.clients.get(hint["aud"])
        target = args.get("post_logout_redirect_uri")
        if target and (client is None or not client.accepts(target, own_origin)):
            return None, "post_logout_redirect_uri non déclarée pour ce client."
        self.store.revoke("at-" + hint["sid"], expires_at=time.time() + self.longest_ttl)  # no token of it outlives that
        return target, ""
