"""The provider's signing key and every token it signs: codes, access tokens, id_tokens, userinfo.

All of them are JWTs signed RS256 with one key, so that any gunicorn worker (or any instance
sharing the data folder) can check what another one issued: nothing is kept between requests
but revocations, in the shared store. The key is made once and kept in the data folder, so a
restart does not invalidate the tokens a client holds; workers forked from the master that
loaded it share it.
"""
from __future__ import annotations

import os
import time

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import RSAKey

ALGORITHM = "RS256"
KEY_FILE = "franceconnect-signing-key.pem"

# `typ` header of each kind: a token of one kind is never accepted as another.
CODE = "oauth-authz-code+jwt"
ACCESS = "at+jwt"  # RFC 9068
ID_TOKEN = "JWT"
USERINFO = "JWT"
INTERACTION = "sandbox-fc-interaction+jwt"  # the authorize request carried through the picker and consent pages


def _load_or_create(data_dir) -> bytes:
    path = data_dir / KEY_FILE
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    try:
        os.link(tmp, path)  # first writer wins: instances started together agree on one key
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_bytes()


class Signer:
    def __init__(self, data_dir):
        pem = _load_or_create(data_dir)
        # Our own file, written above with mode 0600: the slow RSA consistency check a
        # start-up would pay is skipped.
        native = serialization.load_pem_private_key(pem, None, unsafe_skip_rsa_key_validation=True)
        self.key = RSAKey(native, pem)
        self.key.ensure_kid()
        self.kid = self.key.kid
        public = self.key.as_dict(private=False)
        self.jwks = {"keys": [{**public, "use": "sig", "alg": ALGORITHM, "kid": self.kid}]}

    def sign(self, claims: dict, typ: str) -> str:
        return jwt.encode({"alg": ALGORITHM, "kid": self.kid, "typ": typ}, claims, self.key)

    def read(self, token: str, typ: str, *, check_expiry: bool = True, now: float | None = None) -> dict | None:
        """The claims of a token of kind `typ` we signed; None when it is not one (forged,
        another kind, malformed) or when it has expired."""
        if not isinstance(token, str) or token.count(".") != 2 or len(token) > 16_384:
            return None
        try:
            decoded = jwt.decode(token, self.key, algorithms=[ALGORITHM])
        except (JoseError, ValueError, TypeError):
            return None
        if decoded.header.get("typ") != typ or decoded.header.get("kid") != self.kid:
            return None
        claims = decoded.claims
        if check_expiry and not (isinstance(claims.get("exp"), int)
                                 and claims["exp"] > (now if now is not None else time.time())):
            return None
        return claims

    def is_ours(self, token: str) -> bool:
        """Signed by this key, whatever its kind and age (an expired access token is still ours)."""
        return self.read(token, ACCESS, check_expiry=False) is not None
