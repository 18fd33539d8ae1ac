"""A case as the call a client makes for it: its query pairs, and a curl line to paste."""
from __future__ import annotations

from urllib.parse import quote

from .lookup import IDENTITY_PARAMS

RECIPIENT = "13002526500013"  # the DINUM SIRET the official examples use; passes the Luhn check


def query_value(value) -> str:
    if isinstance(value, bool):  # YAML true -> the query's `true`, not Python's `True`
        return "true" if value else "false"
    return str(value)


def sent_params(op, params: dict) -> dict:
    """The case's params a client sends. On a FranceConnect-only route the token carries who the
    person is: the identity params stay out, the others the route declares go (the plate number
    of an ANTS call, a Cnous campaign year)."""
    if op is None or not op.france_connect_only:
        return params
    declared = {p.key for p in op.params if p.location == "query"}
    return {name: value for name, value in params.items()
            if name.removesuffix("[]") not in IDENTITY_PARAMS and name.removesuffix("[]") in declared}


def client_query(op, params: dict, recipient: str | None = RECIPIENT) -> list:
    """A case's params as the query a client sends for it: [(name, value)]. On a FranceConnect-
    only route the token carries who the person is (sent_params); each name as the spec spells
    it (`prenoms[]`), a list as repeated values, booleans as true/false; on v3, first, the
    `recipient` that matching ignores (`recipient` None: none), unless the case names its own."""
    spec_names = {p.key: p.name for p in op.params} if op is not None else {}
    pairs = []
    for name, value in sent_params(op, params).items():
        key = name.removesuffix("[]")
        values = value if isinstance(value, list) else [value]
        shown = spec_names.get(key, f"{key}[]" if isinstance(value, list) else name)
        pairs += [(shown, query_value(v)) for v in values]
    if (recipient and op is not None and op.v3 and "recipient" in spec_names
            and all(name != "recipient" for name, _ in pairs)):
        pairs.insert(0, ("recipient", recipient))
    return pairs


def curl(base: str, op, path: str, pairs: list) -> str:
    if op is not None and op.france_connect_only:
        auth = '-H "Authorization: Bearer $FRANCECONNECT_TOKEN"'
    elif op is not None and op.v3:
        auth = '-H "Authorization: Bearer $TOKEN"'
    else:
        auth = '-H "X-Api-Key: $TOKEN"'
    # Values are percent-encoded, so nothing in them can end the shell's double quotes; the
    # brackets of array names stay readable, and -g stops curl from globbing them.
    query = "&".join(f"{quote(k, safe='[]')}={quote(v, safe='')}" for k, v in pairs)
    url = base + path + (f"?{query}" if query else "")
    globoff = "-g " if "[" in query else ""
    return f'curl {globoff}{auth} "{url}"'
