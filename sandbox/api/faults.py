"""Fault injection per call, without touching fixtures: `X-Sandbox-Fault` or `Prefer: code=NNN`.

`X-Sandbox-Fault: <kind>[,latency=MS]` where kind is a data-provider failure
(data/provider_errors.yml `kinds`: not_found, conflict, internal, unavailable, provider_error,
timeout, rate_limited, maintenance, network_error) answered as production answers it on the
called route (its status on that version, its code, title and detail for that provider), or
`api_rate_limited`: API Particulier itself throttles the caller (v2 and v3 429 bodies,
`Retry-After`), which is what a client's back-off logic has to handle, or `api_internal`: the
API's own 500.

`Prefer: code=NNN` (RFC 7240 style, as Prism and other mock servers read it) picks the kind that
production answers with that status on v2 and v3 alike (404 not_found, 409 conflict, 500
api_internal, 502 network_error, 503 maintenance, 504 timeout, 429 the API's own throttling), so
the answer always has the status asked for.

A value the sandbox does not understand is refused (400 on v2, 422 on v3) rather than ignored:
a silently ignored fault would make a CI test pass for the wrong reason.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

from ..production.errors import FAULT_BY_STATUS, PROVIDER_FAULTS, ApiError

MAX_LATENCY_MS = 30_000
API_RATE_LIMITED = "api_rate_limited"
KINDS = frozenset(PROVIDER_FAULTS) | {API_RATE_LIMITED}
# Prefer: code=429 means "answer 429": the API's own limit, 429 on v2 and v3 alike (a provider's
# throttling is 502 on v3 and 503 on v2).
BY_STATUS = {**FAULT_BY_STATUS, 429: API_RATE_LIMITED}


@dataclass(frozen=True)
class Fault:
    kind: str | None = None   # a key of errors.PROVIDER_FAULTS (provider kinds, api_internal), or API_RATE_LIMITED
    latency_ms: int = 0

    def describe(self) -> str:
        """How the journal records the fault: `timeout`, `latency=800`, `timeout,latency=800`."""
        parts = [self.kind] if self.kind else []
        if self.latency_ms:
            parts.append(f"latency={self.latency_ms}")
        return ",".join(parts)


def _refuse(header: str, detail: str):
    raise ApiError("invalid_parameter", parameter=header, detail=detail)


def _from_fault_header(value: str) -> tuple[str | None, int]:
    kind, latency = None, 0
    accepted = f"X-Sandbox-Fault accepte {', '.join(sorted(KINDS))} et/ou latency=MS (0 à {MAX_LATENCY_MS})"
    for part in filter(None, (p.strip() for p in value.split(","))):
        name, sep, number = (s.strip() for s in part.partition("="))
        name = name.lower()
        if name == "latency" and sep:
            if not number.isdigit() or int(number) > MAX_LATENCY_MS:
                _refuse("X-Sandbox-Fault", f"latency={number} : {accepted}")
            latency = int(number)
        elif name in KINDS and not sep:
            if kind and kind != name:
                _refuse("X-Sandbox-Fault", f"une seule panne à la fois ({kind}, {name}) ; {accepted}")
            kind = name
        else:
            _refuse("X-Sandbox-Fault", f"{part!r} inconnu : {accepted}")
    return kind, latency


def _from_prefer(value: str) -> str | None:
    """The fault named by the `code` preference; other preferences are not the sandbox's business."""
    for preference in value.split(","):
        name, _, code = preference.split(";")[0].strip().partition("=")
        if name.strip().lower() != "code":
            continue
        code = code.strip().strip('"')
        if not code.isdigit() or int(code) not in BY_STATUS:
            _refuse("Prefer", f"Prefer: code={code} : codes acceptés {', '.join(map(str, sorted(BY_STATUS)))}")
        return BY_STATUS[int(code)]
    return None


def from_request(headers) -> Fault | None:
    """The fault a call asks for, None for none; ApiError when the request is not understood."""
    header = headers.get("X-Sandbox-Fault")
    prefer = headers.get("Prefer")
    if not header and not prefer:
        return None
    kind, latency = _from_fault_header(header or "")
    preferred = _from_prefer(prefer or "")
    if preferred and kind and preferred != kind:
        _refuse("Prefer", f"Prefer demande {preferred} mais X-Sandbox-Fault demande {kind}")
    kind = kind or preferred
    return Fault(kind, latency) if kind or latency else None


def api_rate_limited(decision) -> ApiError:
    """The API's own 429, with the headers a real one carries (`decision`: the call's RateLimit state)."""
    retry = 1
    headers = {}
    if decision is not None:
        retry = max(1, math.ceil(decision.reset - time.time()))
        headers = {"RateLimit-Limit": str(decision.limit), "RateLimit-Remaining": "0",
                   "RateLimit-Reset": str(decision.reset)}
    headers["Retry-After"] = str(retry)
    return ApiError("rate_limited", headers=headers)
