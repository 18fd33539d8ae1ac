"""A data provider's failure, answered as production answers it (rules: data/provider_errors.yml).

`provider_fault(kind, v3, provider, prefix, operation_id=None)` -> (status, body). `provider` is
the operation's provider as production's organizer names it (operations.yml); `prefix` is only
used for a provider the table does not know.
"""
from __future__ import annotations

import datetime
from pathlib import Path

import yaml

RULES_FILE = Path(__file__).parent / "data" / "provider_errors.yml"


def _load(path=RULES_FILE):
    with open(path, "rb") as f:
        return yaml.safe_load(f)


RULES = _load()
PROVIDERS: dict = RULES["providers"]
KINDS: dict = RULES["kinds"]
VARIANTS: dict = RULES["variants"]

# Prefer: code=NNN -> the kind that has that status on v2 AND v3, so the answer always carries the
# status asked for. 500 is the API's own internal error (not a provider's), 429 the API's throttle.
API_INTERNAL = "api_internal"
FAULT_BY_STATUS = {404: "not_found", 409: "conflict", 500: API_INTERNAL, 502: "network_error",
                   503: "maintenance", 504: "timeout"}


def entry(kind: str, provider: str, operation_id: str | None = None) -> dict:
    """The kind's rule, with the provider's then the operation's differences applied."""
    override = (RULES.get("by_provider") or {}).get(provider, {}).get(kind, {})
    # `answered_as`: production's code for this provider turns the failure into another kind's
    # error (France Travail's throttle is read as an unknown answer)
    out = dict(KINDS[override.get("answered_as", kind)])
    out.update((k, v) for k, v in override.items() if k != "answered_as")
    if operation_id:
        out.update((RULES.get("by_operation") or {}).get(operation_id, {}).get(kind, {}))
    if kind == "maintenance":
        out.update(_maintenance(provider))
    return out


def variant(name: str, provider: str) -> dict:
    """A named provider-specific answer (data/provider_errors.yml `variants`)."""
    rule = VARIANTS[name]
    return {**entry(rule["kind"], provider), **{k: v for k, v in rule.items() if k != "kind"}}


def _maintenance(provider):
    window = (RULES.get("maintenance_windows") or {}).get(provider)
    if not window:
        return {}
    start, end = (datetime.datetime.strptime(window[k], "%H:%M") for k in ("from", "to"))
    length = (end - start) % datetime.timedelta(days=1)
    return {"detail": f"Le fournisseur de données est en maintenance de {window['from']} à {window['to']}",
            "meta": {"retry_in": int(length.total_seconds())}}


def render(rule: dict, v3: bool, provider: str, prefix: str = "00") -> tuple[int, dict]:
    """(status, body) of one rule in the route's format."""
    if v3:
        named = rule.get("as", provider)
        if "code" in rule:  # an error of the API itself
            code, meta = rule["code"], dict(rule.get("meta") or {})
        else:
            code = f"{PROVIDERS.get(named, prefix)}{rule['subcode']}"
            meta = {"provider": named, **(rule.get("meta") or {})}
        return rule["v3_status"], {"errors": [{"code": code, "title": rule["title"], "detail": rule["detail"],
                                               "meta": meta}]}
    return rule["v2_status"], {"error": rule["v2_error"], "reason": rule.get("v2_reason", rule["detail"]),
                               "message": rule["detail"]}


def provider_fault(kind: str, v3: bool, provider: str, prefix: str = "00",
                   operation_id: str | None = None) -> tuple[int, dict]:
    return render(entry(kind, provider, operation_id), v3, provider, prefix)
