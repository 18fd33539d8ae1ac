"""A service that logs a citizen in with FranceConnect, then asks API Particulier about her with
the civil-status query it builds from the identity FranceConnect gave (the way a widely used
public service's client does, issue 23): the answer must be the one the route's
`/france_connect` variant gives for her access token.

The client builds its query as such code does: every given name as `prenoms[]`, the birth date
split without zero padding, `sexeEtatCivil` from `gender`, the birthplace forwarded as it came
(blank for a birth abroad: `codeCogInseeCommuneNaissance=`), the birth country always, the nom
d'usage when FranceConnect gives one; the same query for every v3+ route, whether the route reads
all of it or not.

Every citizen of the built-in FranceConnect (the directory the provider itself builds from the
bundled fixtures), on every FranceConnect route she answers on, against a real gunicorn: a v3+
`/france_connect` route is compared with its `/identite` sibling, a v2 route (which takes a
FranceConnect token or a civil status) with itself, called with v2's names.
"""
from __future__ import annotations

import datetime
import logging
import os
import secrets
import sys
import time
from urllib.parse import parse_qs, urlparse

import pytest
import requests

from ..conftest import RECIPIENT, SECRET, Server, free_port, token_for

CALLBACK = "http://rp.example.test/callback"
PREFIX = "/franceconnect/api/v2"

# Cases that fail for another reason than the lookup, each with its reason (none today: DSNJ's
# FranceConnect route checks the identity's age as its civil-status route does, and every person of a
# FranceConnect route has her civil-status case, under the given names a client sends).
OTHER: dict = {}
# The day both sides are judged on: the DSNJ's civil-status cases take birth years relative to the
# day, the FranceConnect identities have fixed birth dates, so ages agree on a frozen day only
# (docs/fixtures.md, Relative dates). The list below and the server are frozen on it.
DAY = datetime.date(2026, 12, 3)


def _cases():
    """(citizen, FranceConnect route, civil-status route, status) for every answer of every citizen:
    a v3+ `/france_connect` route and its `/identite` sibling, or a v2 route (which takes both);
    and every citizen's id."""
    from sandbox.franceconnect.personas import Personas
    from sandbox.population.served import Population
    from sandbox.production.spec import load_specs
    from sandbox.production import clock
    from sandbox.settings import BUNDLED_FIXTURES, BUNDLED_SPEC

    operations = load_specs((BUNDLED_SPEC,)).by_operation_id()
    previous = clock._FROZEN
    clock.freeze(DAY)
    try:
        population = Population((BUNDLED_FIXTURES,), operations, 0, logging.getLogger("test"))
        cases, directory = [], Personas(population, operations).current()
    finally:
        clock.freeze(previous)
    for citizen in directory.citizens.values():
        for answer in citizen.answers:
            if answer["path"].startswith("/api/v2/"):
                civil_path = answer["path"]
            else:
                civil = operations.get(answer["operation_id"].replace("_with_france_connect", "_with_civility"))
                if civil is None or civil.operation_id == answer["operation_id"]:
                    continue  # ANTS: no civil-status variant
                civil_path = civil.path
            key = (citizen.id, answer["path"])
            marks = [pytest.mark.xfail(strict=True, reason=OTHER[key])] if key in OTHER else []
            cases.append(pytest.param(citizen.id, answer["path"], civil_path, answer["status"], marks=marks,
                                      id=f"{citizen.id}:{answer['path']}"))
    return cases, set(directory.citizens)


CASES, CITIZENS = _cases()


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """One real gunicorn for every citizen; no rate limit (a few hundred calls in a row)."""
    folder = tmp_path_factory.mktemp("citizens")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")}
    env.update({"SANDBOX_TOKEN_SECRET": SECRET, "SANDBOX_DATA_DIR": str(folder / "data"), "SANDBOX_PORT": str(port),
                "SANDBOX_HOST": "127.0.0.1", "SANDBOX_SANDBOX_RATE_LIMIT": "off",
                "SANDBOX_TODAY": DAY.isoformat()})
    args = [sys.executable, "-m", "sandbox", "serve", "--workers", "2", "--rate-limit", "off",
            "--ip-rate-limit", "off", "--provider-limits", "off"]
    server = Server(args, env, port, open(folder / "server.log", "w+"))
    try:
        yield server.wait_ready()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def discovery(sandbox):
    from joserfc.jwk import KeySet

    config = requests.get(sandbox.url + PREFIX + "/.well-known/openid-configuration", timeout=10).json()
    config["keys"] = KeySet.import_key_set(requests.get(config["jwks_uri"], timeout=10).json())
    return config


_logged_in: dict = {}  # citizen -> (when, access token, identity): her routes' cases run one after another


def logged_in(discovery, citizen: str) -> tuple[str, dict]:
    """login(), once per citizen while her access token (60 s) has time left."""
    when, access, identity = _logged_in.get(citizen, (0.0, None, None))
    if time.monotonic() - when > 30:
        access, identity = login(discovery, citizen)
        _logged_in[citizen] = (time.monotonic(), access, identity)
    return access, identity


def login(discovery, citizen: str) -> tuple[str, dict]:
    """The non-interactive FranceConnect login of `citizen`, asking for her identity, her nom
    d'usage and every data scope: (access token, the identity userinfo gives)."""
    from joserfc import jwt

    identity_scopes = {"openid", "identite_pivot", "profile", "birth", "given_name", "family_name", "birthdate",
                       "gender", "birthplace", "birthcountry", "email", "preferred_username"}
    data_scopes = [s for s in discovery["scopes_supported"] if s not in identity_scopes]
    query = {"client_id": "sandbox", "response_type": "code", "redirect_uri": CALLBACK, "acr_values": "eidas1",
             "scope": " ".join(["openid", "identite_pivot", "preferred_username", *data_scopes]),
             "state": secrets.token_urlsafe(32),
             "nonce": secrets.token_urlsafe(32), "login_hint": citizen, "prompt": "none"}
    back = requests.get(discovery["authorization_endpoint"], params=query, allow_redirects=False, timeout=10)
    assert back.status_code == 302, back.text
    code = parse_qs(urlparse(back.headers["Location"]).query)["code"][0]
    token = requests.post(discovery["token_endpoint"], timeout=10, data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK, "client_id": "sandbox",
        "client_secret": "sandbox"})
    assert token.status_code == 200, token.text
    access = token.json()["access_token"]
    userinfo = requests.get(discovery["userinfo_endpoint"], headers={"Authorization": f"Bearer {access}"},
                            timeout=10)
    assert userinfo.status_code == 200, userinfo.text
    return access, jwt.decode(userinfo.text, discovery["keys"], algorithms=["RS256"]).claims


def _birth(identity: dict) -> tuple:
    year, month, day = identity["birthdate"].split("-")
    return year, str(int(month)), str(int(day))  # no zero padding


def _sexe(identity: dict) -> str:
    return "M" if identity["gender"] == "male" else "F"


def _nom_usage(identity: dict) -> list:
    # FranceConnect gives a nom d'usage only when the identity provider knows one
    return [("nomUsage", identity["preferred_username"])] if identity.get("preferred_username") else []


def v3_query(identity: dict) -> list:
    """The query the client builds from the identity for every v3+ civil-status route."""
    year, month, day = _birth(identity)
    return [("nomNaissance", identity["family_name"]), *_nom_usage(identity),
            *(("prenoms[]", name) for name in identity["given_name_array"]),
            ("anneeDateNaissance", year), ("moisDateNaissance", month), ("jourDateNaissance", day),
            ("sexeEtatCivil", _sexe(identity)),
            ("codeCogInseeCommuneNaissance", identity["birthplace"]),  # "" for a birth abroad: sent blank
            ("codeCogInseePaysNaissance", identity["birthcountry"])]


def cnav_v2_query(identity: dict) -> list:
    """CNAV's v2 routes: the same identity under v2's names."""
    year, month, day = _birth(identity)
    return [("nomNaissance", identity["family_name"]), *_nom_usage(identity),
            *(("prenoms[]", name) for name in identity["given_name_array"]),
            ("anneeDateDeNaissance", year), ("moisDateDeNaissance", month), ("jourDateDeNaissance", day),
            ("sexe", _sexe(identity)), ("codeInseeLieuDeNaissance", identity["birthplace"]),
            ("codePaysLieuDeNaissance", identity["birthcountry"])]


def _student_v2(identity: dict, first_names: tuple) -> list:
    # v2's lieuDeNaissance: the commune, or the country's code for a birth abroad (the spec's "99 + country code")
    return [("nom", identity["family_name"]), first_names, ("dateDeNaissance", identity["birthdate"]),
            ("lieuDeNaissance", identity["birthplace"] or identity["birthcountry"]), ("sexe", _sexe(identity))]


QUERIES = {  # civil-status route -> how the client builds its query; v3+ routes: v3_query
    "/api/v2/etudiants": lambda i: _student_v2(i, ("prenom", i["given_name_array"][0])),  # MESRI: one first name
    "/api/v2/etudiants-boursiers": lambda i: _student_v2(i, ("prenoms", i["given_name"])),  # Cnous: all, spaced
}


def civil_status_call(path: str, identity: dict) -> tuple:
    """(query, headers) of the civil-status call, with an API Particulier token of every scope."""
    if path.startswith("/api/v2/"):
        return [("recipient", RECIPIENT), *QUERIES.get(path, cnav_v2_query)(identity)], {"X-Api-Key": token_for()}
    return [("recipient", RECIPIENT), *v3_query(identity)], {"Authorization": f"Bearer {token_for()}"}


def test_every_citizen_is_covered():
    """Every citizen has at least one case below, people born abroad (blank birthplace) included."""
    assert {c.values[0] for c in CASES} == CITIZENS and len(CITIZENS) >= 100
    assert {"cnaf_ne_etranger", "etudiant_3", "divers_2"} <= CITIZENS  # born in Morocco


@pytest.mark.slow
@pytest.mark.parametrize("citizen, france_connect_path, civil_status_path, status", CASES)
def test_a_citizen_gets_the_same_answer_through_her_civil_status(sandbox, discovery, citizen, france_connect_path,
                                                                civil_status_path, status):
    access, identity = logged_in(discovery, citizen)
    assert identity["birthplace"] == "" if identity["birthcountry"] != "99100" else len(identity["birthplace"]) == 5

    by_token = requests.get(sandbox.url + france_connect_path, params={"recipient": RECIPIENT},
                            headers={"Authorization": f"Bearer {access}"}, timeout=10)
    assert by_token.status_code == status, by_token.text

    query, headers = civil_status_call(civil_status_path, identity)
    by_civil_status = requests.get(sandbox.url + civil_status_path, params=query, headers=headers, timeout=10)
    why = by_civil_status.headers.get("X-Sandbox-Near-Miss") or by_civil_status.text[:300]
    assert by_civil_status.status_code == by_token.status_code, why
    # the same answer, except that a civil-status answer restates who was found (data.identite),
    # which the FranceConnect one leaves to the identity the service already holds
    civil, fc = _leaves(by_civil_status.json()), _leaves(by_token.json())
    assert {k: civil.get(k, "<absent>") for k in fc} == fc
    assert all(k.startswith("/data/identite/") for k in civil.keys() - fc.keys()), sorted(civil.keys() - fc.keys())


def _leaves(node, path="") -> dict:
    """{"/data/a/b[0]": leaf value} of a JSON document."""
    if isinstance(node, dict):
        return {k: v for name, child in node.items() for k, v in _leaves(child, f"{path}/{name}").items()}
    if isinstance(node, list):
        return {k: v for i, child in enumerate(node) for k, v in _leaves(child, f"{path}[{i}]").items()}
    return {path: node}
