"""The bundled virtual population: every case answers through HTTP, the official staging's
well-known keys answer with the same status, and `fixtures check` is clean."""
from __future__ import annotations

import collections
import datetime
from urllib.parse import unquote

import pytest
import yaml
from click.testing import CliRunner

from sandbox.population import dates
from sandbox.production import clock
from sandbox.cli import main
from sandbox.population.lookup import canonical_identity, identity_agrees
from sandbox.population.calls import client_query

from .conftest import RECIPIENT, ROOT, token_for, v2_headers, v3_headers

FIXTURES = ROOT / "fixtures"
CALLBACK = "http://rp.example.test/callback"  # a redirect_uri the built-in FranceConnect's `sandbox` client accepts


def test_fixtures_check_is_clean_on_the_bundled_set():
    result = CliRunner().invoke(main, ["fixtures", "check"])
    assert result.exit_code == 0, result.output
    assert "0 problem(s)" in result.output


def test_every_operation_has_four_answered_cases_and_its_errors(app):
    sandbox = app.extensions["sandbox"]
    fixtures = sandbox.population.current
    for operation_id, op in sandbox.operations.items():
        if op.gone:
            continue
        statuses = collections.Counter(c.status for c in fixtures.ordered.get(operation_id, []))
        assert statuses[200] >= 4, (operation_id, statuses)
        # production's provider-error statuses (siade/app/controllers/concerns/organizers_methods_helpers.rb,
        # v2/base_controller.rb): v3 404/502/504 (503 only in maintenance), v2 404/503/504
        assert {404, 502, 504} <= set(statuses) if op.v3 else {404, 503} <= set(statuses), (operation_id, statuses)
        assert 500 not in statuses or not op.v3, (operation_id, "a provider error is never a v3 500")
        assert operation_id in fixtures.fallback, f"{operation_id} has no 404.yaml"
        if not op.france_connect_only and "cnous" in operation_id and any(p.key in ("nomNaissance", "nom")
                                                                          for p in op.params):
            # siade/app/interactors/cnous/validate_response.rb: the one provider production answers 409 for
            assert 409 in statuses, (operation_id, "homonyms")


@pytest.mark.slow  # every bundled case through the app: about a minute
def test_every_bundled_case_answers_through_http(make_app):
    """Every case of every folder, called with its own params (FranceConnect routes with a token
    of the case's identity): the case answers, with its status and its payload.

    Production's parameter rules are the authority, and they run before any matching: a case
    whose params the sandbox refuses is a failure (it is never served), unless its own status is
    400/422, when the refusal must come with that status. On a v2 route that also takes
    FranceConnect, a case the API-key call cannot reach is called as its own person through the
    built-in FranceConnect, as `fixtures check` counts it. The retired CAF v1 route's cases are
    served with SANDBOX_SERVE_RETIRED, as teams still migrating run it."""
    app = make_app(rate_limit="off", ip_rate_limit="off", serve_retired=True, provider_limits=False)
    client = app.test_client()
    sandbox = app.extensions["sandbox"]
    fixtures = sandbox.population.current
    identities = {t: who for t, who in fixtures.france_connect.items()}
    checked, through_login, failures = 0, 0, []
    for operation_id, cases in fixtures.ordered.items():
        op = sandbox.operations[operation_id]
        for case in cases:
            if fixtures.cases[operation_id].get(case.key) is not case:
                continue
            if op.france_connect_only:
                route_scopes = sandbox.catalogue.get(operation_id).scopes
                bearers = [t for t, who in identities.items()
                           if fixtures.match_france_connect(operation_id, who, _Args(case)) is case]
                # the consent that covers the most of the route's data, so the payload comes back whole
                bearer = max(bearers, default=None,
                             key=lambda t: len(route_scopes & set(identities[t].get("scope", "").split())))
                if bearer is None:
                    continue  # reachable by civil status only through a token: counted below
                headers = v3_headers(bearer)
                query = client_query(op, {k: v for k, v in case.params.items() if k not in _identity_names()})
            else:
                token = token_for()  # one token per call: the 20/s limit is not what this test is about
                headers = v3_headers(token) if op.v3 else v2_headers(token)
                query = client_query(op, case.params)
            response = client.get(op.path, query_string=query, headers=headers)
            if _refused(response) and op.france_connect and not op.france_connect_only:
                bearer = _login_as(client, sandbox, case)
                if bearer is not None:
                    headers = {"Authorization": f"Bearer {bearer}"}
                    query = client_query(op, {k: v for k, v in case.params.items() if k not in _identity_names()})
                    response = client.get(op.path, query_string=query + [("recipient", RECIPIENT)], headers=headers)
                    through_login += not _refused(response)
            checked += 1
            if _refused(response):
                if response.status_code != case.status:  # only a 400/422 case documents a refusal
                    failures.append((case.id, "refused", case.status, response.status_code,
                                     response.get_data(as_text=True)[:160]))
            elif response.status_code != case.status or unquote(response.headers.get("X-Sandbox-Case", "")) != case.id:
                failures.append((case.id, case.status, response.status_code, response.get_data(as_text=True)[:120]))
            elif response.get_json() != _answered(sandbox, case) and not _partial_consent(
                    sandbox, operation_id, headers, identities):
                failures.append((case.id, "payload"))
    assert checked > 1000
    assert through_login >= 6  # the official FranceConnect keys of v2 MESRI (3) and Cnous (3)
    assert not failures, "\n".join(map(str, failures[:30]))


def _refused(response) -> bool:
    """Production's parameter validation answered: no case was looked up."""
    return response.status_code in (400, 422) and "X-Sandbox-Case" not in response.headers


def _login_as(client, sandbox, case):
    """An access token of the built-in FranceConnect for the citizen the case names (its
    non-interactive login: prompt=none, every data scope consented), or None."""
    wanted = canonical_identity(case.params)
    if "nom" not in wanted:
        return None
    citizen = next((c for c in sandbox.franceconnect.personas.current().citizens.values()
                    if identity_agrees(canonical_identity(c.identity), wanted)), None)
    if citizen is None:
        return None
    from urllib.parse import parse_qs, urlparse
    scope = client.get("/franceconnect/essayer/config").get_json()["scope"]
    query = {"client_id": "sandbox", "redirect_uri": CALLBACK, "response_type": "code", "state": "s" * 32,
             "nonce": "n" * 32, "acr_values": "eidas1", "scope": scope, "login_hint": citizen.id, "prompt": "none"}
    back = client.get("/franceconnect/api/v2/authorize", query_string=query).headers["Location"]
    return client.post("/franceconnect/api/v2/token", data={
        "grant_type": "authorization_code", "code": parse_qs(urlparse(back).query)["code"][0],
        "redirect_uri": CALLBACK, "client_id": "sandbox", "client_secret": "sandbox"}).get_json()["access_token"]


def _answered(sandbox, case):
    """The case's payload as production's serializers send it to a token holding every scope
    (a field no scope reveals, like the QF v2 `regime`, is never sent)."""
    payload = case.payload_on(clock.today())
    scopes = sandbox.catalogue.get(case.operation_id)
    if case.status != 200 or scopes is None:
        return payload
    return scopes.mask(payload, frozenset(sandbox.catalogue.all_scopes()))


def _partial_consent(sandbox, operation_id, headers, identities):
    bearer = headers.get("Authorization", "")[7:]
    consent = set(identities.get(bearer, {}).get("scope", "").split())
    return bearer in identities and not sandbox.catalogue.get(operation_id).scopes <= consent


def _Args(case):
    """The non-identity parameters of a case, as a request would carry them."""
    from werkzeug.datastructures import MultiDict
    return MultiDict([(k, str(x)) for k, v in case.params.items() if k not in _identity_names()
                      for x in (v if isinstance(v, list) else [v])])


def _identity_names():
    from sandbox.population.lookup import IDENTITY_PARAMS
    return IDENTITY_PARAMS | {"prenoms[]"}


def test_every_france_connect_route_answers_the_shared_persona(app, client):
    sandbox = app.extensions["sandbox"]
    for operation_id, op in sandbox.operations.items():
        if not op.france_connect_only or "ants" in operation_id or "dsnj" in operation_id:
            continue
        response = client.get(op.path, query_string={"recipient": RECIPIENT}, headers=v3_headers("tout"))
        assert response.status_code == 200, (operation_id, response.get_data(as_text=True)[:200])


def test_the_service_national_checks_the_france_connect_identitys_age(client, monkeypatch):
    """DSNJ's organizer judges the age (16 to 25) of the identity a FranceConnect token carries, as
    it judges a civil status (dsnj/service_national_with_france_connect_controller.rb runs the same
    organizer): the shared persona, 36, is refused as her civil status is; a 21-year-old answers."""
    monkeypatch.setattr(clock, "_FROZEN", datetime.date(2026, 12, 3))  # Jean-Baptiste ESSAI is 21
    path = "/v3/dsnj/service_national/france_connect"
    camille = client.get(path, query_string={"recipient": RECIPIENT}, headers=v3_headers("tout"))
    assert camille.status_code == 422 and [e["code"] for e in camille.json["errors"]] == ["39400"]
    by_civil_status = client.get("/v3/dsnj/service_national/identite", headers=v3_headers(token_for()), query_string=[
        ("recipient", RECIPIENT), ("nomNaissance", "BACASABLE"), ("prenoms[]", "Camille"), ("prenoms[]", "Marie"),
        ("anneeDateNaissance", "1990"), ("moisDateNaissance", "4"), ("jourDateNaissance", "12"),
        ("sexeEtatCivil", "F"), ("codeCogInseeCommuneNaissance", "75115"), ("codeCogInseePaysNaissance", "99100")])
    assert by_civil_status.status_code == 422 and by_civil_status.json == camille.json
    jean_baptiste = client.get(path, query_string={"recipient": RECIPIENT}, headers=v3_headers("divers_1"))
    assert jean_baptiste.status_code == 200, jean_baptiste.get_data(as_text=True)[:200]


WELL_KNOWN = [
    # (path, params, status) — the keys integrators already use against the official staging
    ("/api/v2/composition-familiale", {"numeroAllocataire": "2345678", "codePostal": "75001"}, 200),
    ("/api/v2/composition-familiale", {"numeroAllocataire": "0000354", "codePostal": "99148"}, 200),
    *[("/api/v2/composition-familiale", {"numeroAllocataire": str(n), "codePostal": "44100"}, 200)
      for n in range(4400100, 4400118)],
    *[(path, {"identifiant": key}, status)
      for path in ("/api/v2/situations-pole-emploi", "/v3/france_travail/statut/identifiant")
      for key, status in [("default", 200), *[(f"{n}A", 200) for n in range(123456, 123463)],
                          ("not_found", 404), ("internal_error", 500)]],
    ("/v3/france_travail/statut/identifiant", {"identifiant": "timeout"}, 504),
    *[(path, {"ine": ine}, status)
      for path in ("/api/v2/etudiants", "/api/v2/etudiants-boursiers", "/v3/mesri/statut_etudiant/ine",
                   "/v3/cnous/etudiant_boursier/ine", "/v4/cnous/etudiant_boursier/ine")
      for ine, status in [*[(f"123456789{d}{c}", 200) for d in "01" for c in "ABCD"],
                          ("1234567404G", 404), ("1234567500G", 500), ("1234567503G", 503)]],
]


def production_status(path, staging_status):
    """The official staging answers its error keys with hand-written statuses; production gives a
    provider's internal error or unavailability 502 on v3 and 503 on v2
    (siade/app/controllers/concerns/organizers_methods_helpers.rb, v2/base_controller.rb)."""
    if path == "/api/v2/composition-familiale":  # retired (siade/config/routes/api_particulier.rb)
        return 410
    if staging_status in (500, 503):
        return 502 if path.startswith("/v") else 503
    return staging_status


@pytest.mark.parametrize("path,params,status", WELL_KNOWN, ids=lambda v: str(v)[:40])
def test_official_well_known_keys_answer_with_the_same_status(client, path, params, status):
    status = production_status(path, status)
    token = token_for()
    if path.startswith("/v"):
        response = client.get(path, query_string={**params, "recipient": RECIPIENT}, headers=v3_headers(token))
    else:
        response = client.get(path, query_string=params, headers=v2_headers(token))
    assert response.status_code == status, response.get_data(as_text=True)[:200]


def test_official_civil_status_cases_answer_with_the_same_status(client, monkeypatch):
    """The civil-status cases of the official C2S, RSA and QF v2 folders: same identity, same status,
    except where production's own rules refuse the official params (400; test_staging_replay says why).

    Asked on a day when the official quotient familial month (annee=2026, mois=5) is the one the
    bundled case's relative `annee`/`mois` give (six months back): production judges that month
    against today, so the bundled case follows the day and the official key is one day's value."""
    import datetime
    monkeypatch.setattr(clock, "_FROZEN", datetime.date(2026, 11, 15))
    from .conftest import require_reference
    from .test_staging_replay import REFUSED_REASONS
    reference = require_reference() / "staging-payloads"
    token = token_for()
    checked, failures = 0, []
    for folder in ("api_particulier_v2_cnav_complementaire_sante_solidaire",
                   "api_particulier_v2_cnav_revenu_solidarite_active", "api_particulier_v2_cnav_quotient_familial_v2"):
        path = {"complementaire": "/api/v2/complementaire-sante-solidaire", "revenu": "/api/v2/revenu-solidarite-active",
                "quotient": "/api/v2/composition-familiale-v2"}[folder.split("_")[4]]
        for file in sorted((reference / folder).glob("*.y*ml")):
            case = yaml.safe_load(file.read_text())
            params = case.get("params") or {}
            if not params or {"given_name", "family_name"} & params.keys() or case["status"] == 400:
                continue
            query = [(k + "[]" if isinstance(v, list) else k, str(x)) for k, v in params.items()
                     for x in (v if isinstance(v, list) else [v])]
            response = client.get(path, query_string=query, headers=v2_headers(token_for()))
            checked += 1
            expected = 400 if f"{folder}/{file.name}" in REFUSED_REASONS else case["status"]
            if response.status_code != expected:
                failures.append((file.name, expected, response.status_code))
    assert checked > 40
    assert not failures, failures


def test_personas_catalogue_lists_every_case(client, app):
    body = client.get("/sandbox/personas").get_json()
    fixtures = app.extensions["sandbox"].population.current
    listed = {op["operation_id"]: op for op in body["operations"]}
    assert set(listed) == set(fixtures.ordered)
    qf = listed["api_particulier_v2_cnaf_quotient_familial"]
    assert qf["path"] == "/api/v2/composition-familiale"
    assert all({"file", "description", "params", "status"} <= set(c) for c in qf["cases"])
    assert sum(len(op["cases"]) for op in body["operations"]) == sum(len(c) for c in fixtures.ordered.values())


def test_dates_are_real_calendar_dates():
    import datetime
    import re
    date = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
    bad = []
    for path in FIXTURES.rglob("*.y*ml"):
        for y, m, d in date.findall(path.read_text()):
            try:
                datetime.date(int(y), int(m), int(d))
            except ValueError:
                bad.append((path.name, f"{y}-{m}-{d}"))
    assert not bad, bad
