"""Fault injection per call: `X-Sandbox-Fault` or `Prefer: code=503`, without touching fixtures."""
from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import FAULT_BY_STATUS, PROVIDER_FAULTS, ApiError

MAX_LATENCY_MS = 30_000


@dataclass(frozen=True)
class Fault:
    kind: str | None = None   # a key of errors.PROVIDER_FAULTS
    latency_ms: int = 0

    def describe(self) -> str:
        parts = [self.kind] if self.kind else []
        if self.latency_ms:
            parts.append(f"latency={self.latency_ms}")
        return ",".join(parts)


def from_request(headers) -> Fault | None:
    header = headers.get("X-Sandbox-Fault")
    prefer = headers.get("Prefer")
    if not header and not prefer:
        return None
    kind, latency = None, 0
    for part in filter(None, (p.strip() for p in (header or "").split(","))):
        name, _, value = part.partition("=")
        if name == "latency" and value.isdigit():
            latency = min(int(value), MAX_LATENCY_MS)
        elif name in PROVIDER_FAULTS:
            kind = name
        else:
            raise ApiError("invalid_parameter", parameter="X-Sandbox-Fault",
                           detail=f"X-Sandbox-Fault accepte {', '.join(sorted(PROVIDER_FAULTS))} ou latency=MS")
    if prefer:
        found = re.search(r"code=(\d{3})", prefer)
        if found:
            code = int(found.group(1))
            if code not in FAULT_BY_STATUS:
                raise ApiError("invalid_parameter", parameter="Prefer",
                               detail=f"Prefer: code= accepte {', '.join(map(str, sorted(FAULT_BY_STATUS)))}")
            kind = FAULT_BY_STATUS[code]
    return Fault(kind, latency) if kind or latency else None
