"""How production reads a request's envelope: Rails' request id, and a Bearer token."""
from __future__ import annotations

import random
import re


# --- X-Request-Id: Rails' ActionDispatch::RequestId (actionpack 8.1), on every answer ----------
def request_id(headers) -> str:
    """The client's X-Request-Id stripped to letters, digits, `_`, `-` and `@` and cut at 255
    characters; a new UUID when the client sent none. Production echoes it, and its CNAV
    routes check it is a UUID (validation_rules.request_id)."""
    sent = headers.get("X-Request-Id") if headers is not None else None
    if sent is not None and sent.strip():
        return re.sub(r"[^\w\-@]", "", sent, flags=re.ASCII)[:255]
    # a random (version 4) UUID, from one call to the generator: uuid.uuid4() asks the OS each time
    bits = f"{random.getrandbits(128) & ~(0xF << 76) & ~(0x3 << 62) | (0x4 << 76) | (0x2 << 62):032x}"
    return f"{bits[:8]}-{bits[8:12]}-{bits[12:16]}-{bits[16:20]}-{bits[20:]}"


_BEARER = re.compile(r"Bearer (.+)")


def bearer_token(headers) -> str | None:
    """`Authorization: Bearer <token>` exactly as production reads it (concerns/handle_tokens.rb):
    "Bearer" with a capital B and one space; anything else is no Bearer token at all."""
    found = _BEARER.fullmatch(headers.get("Authorization") or "")
    return found.group(1) if found else None
