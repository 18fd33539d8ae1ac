"""What production sends around its bodies: request ids, caching headers, content types, and
the answers of retired, unknown and unsupported-version routes.

Each function names the production file it mirrors (paths under siade/ of
datagouv/apistration). The pipeline (pipeline.py) and the app (application.py) call them; this
module decides nothing about a request's data.
"""
from __future__ import annotations

import re
from urllib.parse import quote

from ..production.parameter_checks import to_i
from ..production.retired import RETIRED

JSON = "application/json; charset=utf-8"
JSON_API = "application/vnd.api+json; charset=utf-8"
TEXT = "text/plain; charset=utf-8"


# --- caching: siade/app/controllers/concerns/cacheable.rb ---------------------------------------
def cache_headers() -> dict:
    """Set on every answer of an API route once the token and its scopes passed (before the
    version, recipient and parameter checks): the sandbox never answers from a cache."""
    return {"X-Response-Cached": "false", "X-Cache-Expires-in": ""}


# --- the sandbox's own headers ------------------------------------------------------------------
HEADER_LIMIT = 400
# what stays as it is in a header value: printable ASCII but %, which marks an encoded byte
_HEADER_SAFE = "".join(chr(c) for c in range(0x20, 0x7f) if chr(c) not in "%abcdefghijklmnopqrstuvwxyz"
                       "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-~")


def header_text(text: str, limit: int = HEADER_LIMIT) -> str:
    """Any text as a header value every server and client takes: one line, ASCII, the rest
    percent-encoded as UTF-8 (a file named élève.yaml reads %C3%A9l%C3%A8ve.yaml, which a user
    can still recognise and decode), cut at `limit` characters."""
    value = quote(" ".join(str(text).split()), safe=_HEADER_SAFE)
    if len(value) <= limit:
        return value
    cut = limit - 3
    while value.rfind("%", 0, cut) > cut - 3:  # never inside an encoded byte
        cut = value.rfind("%", 0, cut)
    return value[:cut] + "..."


def stale_header(problems) -> str:
    """X-Sandbox-Fixtures-Stale: the files on disk are not the ones served (a reload found them
    broken): the first problem, and how many more GET /sandbox/status lists."""
    more = f" (and {len(problems) - 1} more: GET /sandbox/status)" if len(problems) > 1 else ""
    return header_text(problems[0], HEADER_LIMIT - len(more)) + more


# --- content types: v3_and_more/base_controller.rb, api_controller.rb, v2/base_controller.rb ---
def content_type(v3: bool, stage: str) -> str:
    """`stage`: "auth" (token, scope and rate-limit refusals), "recipient" (the recipient
    check, rendered before production sets its JSON:API type) or "answer" (data, parameter
    errors, provider errors, unsupported version)."""
    return JSON_API if v3 and stage == "answer" else JSON


# --- retired routes (production/retired.py has production's table) --------------------------
def retired_answer(path: str, serve_retired: bool = False):
    """(410, body, headers) for a retired route, or None when it is served (unknown to this
    table, or the CAF v1 route kept by the serve_retired setting). Production answers before
    any token check, with a plain text body and no Content-Type."""
    entry = RETIRED.get(path)
    if entry is None or (serve_retired and entry[1]):
        return None
    return 410, entry[0].encode(), {}


# --- unknown routes and versions ------------------------------------------------------------------
_NOT_FOUND = "Cette URL n'existe pas sur Api particulier, veuillez vérifier votre URL."


def unknown_route_answer():
    """siade/app/controllers/errors_controller.rb (config/routes.rb's catch-all, every method):
    404, plain text, before any token check. Also what production answers a known path called
    with another method (there is no 405)."""
    return 404, _NOT_FOUND.encode(), {"Content-Type": TEXT}


_VERSIONED = re.compile(r"/v([^/]*)(/.+)")


def version_of(path: str):
    """(api version as production reads it, the rest of the path) for a `/v<x>/...` path, or None.
    config/routes/api_particulier.rb scopes `v:api_version` with a constraint that the segment
    holds a digit (lib/api_domain_constraint.rb); the controller reads it with to_i."""
    found = _VERSIONED.fullmatch(path)
    if not found or not re.search(r"\d", found.group(1), re.ASCII):
        return None
    return to_i(found.group(1)), found.group(2)


def resolve_version(path: str, operations_by_path: dict):
    """For a `/v<x>/<dataset>/<mode>` path with no route of its own: (operation, error detail or
    None). The operation is a sibling version of the same route, whose token and scope checks
    production runs first (before_action order); then it answers 404 00402 (VersionAware,
    concerns/version_aware.rb) unless the version, read as an integer, exists (`/v03/` is v3)."""
    parsed = version_of(path)
    if parsed is None:
        return None
    version, rest = parsed
    exact = operations_by_path.get(f"/v{version}{rest}")
    if exact is not None:
        return exact, None
    for candidate, op in operations_by_path.items():
        other = version_of(candidate)
        if other is not None and other[1] == rest:
            return op, f"La version v{version} n'est pas supportée pour cet endpoint"
    return None
