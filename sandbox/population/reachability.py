"""Whether a fixture case can be served: production's validation runs before any matching, so a
case whose params it refuses is never answered (FixtureSet.check says so, as `fixtures check`).

The call judged is the one a client makes with the case's params (calls.client_query, the
case's own recipient left out: production's lookup never reads it); the sandbox
validates it exactly as it validates a request (Operation.validate, validation_rules.py).
"""
from __future__ import annotations

from werkzeug.datastructures import MultiDict

from ..production.errors import ApiError, render
from ..production.mocking_params import NEVER_READ
from .calls import RECIPIENT, client_query
from .lookup import IDENTITY_PARAMS, canonical_identity

# A FranceConnect call: production reads a Bearer on a FranceConnect-capable v2 route as one
# (validation_rules.check then runs the route's france_connect steps).
FRANCE_CONNECT_HEADERS = {"Authorization": "Bearer france-connect"}
PERSON = frozenset({"nom", "prenoms", "annee", "mois", "jour"})


def refused(op, query: list, headers: dict) -> str | None:
    """The detail of the first error production's validation answers the call, or None."""
    try:
        op.validate(MultiDict(query), headers)
    except ApiError as error:
        _, body = render(error, op.v3)
        return body["errors"][0]["detail"] if op.v3 else body.get("reason") or body.get("message")
    return None


def refusal(fixtures, op, case) -> str | None:
    """Why production refuses every call that would select the case (its first error), or None:
    some call reaches it.

    A 400/422 case documents the refusal: that is its answer. A case of a FranceConnect-only route
    is selected by a token's identity, which no query check sees: it is not judged here. On a v2
    route that also takes FranceConnect (CNAV, MESRI, Cnous), see reached_through_france_connect."""
    if case.status in (400, 422) or op.france_connect_only:
        return None
    why = refused(op, client_query(op, _read(case.params)), {})
    if why is None or reached_through_france_connect(fixtures, op, case):
        return None
    return why


def reached_through_france_connect(fixtures, op, case) -> bool:
    """Whether a FranceConnect call of the case's own person reaches it, on a route that takes an
    API key or a FranceConnect token.

    The sandbox's FranceConnect provider offers a citizen for every case of such a route that
    names a person born on a known day (franceconnect/personas.py), so the case's civil status
    stands for the token's identity, and the call carries the case's other params (the matcher
    compares them as production reads them); production then checks only those and the
    recipient. Not reached this way: a case that names nobody (an INE key), one the matcher gives
    to an earlier case of the same person, one whose other params the FranceConnect checks
    refuse. The API-key refusal then stands: such a case is never served."""
    if not op.france_connect or not PERSON <= canonical_identity(case.params).keys():
        return False
    others = [(k, v) for k, v in client_query(op, _read(case.params), recipient=None)
              if k.removesuffix("[]") not in IDENTITY_PARAMS]
    if fixtures.match_france_connect(op.operation_id, case.params, MultiDict(others)) is not case:
        return False
    return refused(op, others + [("recipient", RECIPIENT)], FRANCE_CONNECT_HEADERS) is None


def _read(params: dict) -> dict:
    """The params production's lookup reads: a case's own recipient is not one (any valid one
    reaches the case)."""
    return {name: value for name, value in params.items() if name.removesuffix("[]") not in NEVER_READ}
