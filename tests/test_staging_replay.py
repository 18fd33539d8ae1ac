"""The official staging's own cases, served unchanged by a real gunicorn sandbox.

`serve --spec <upstream v2> --spec <upstream v3> --fixtures <official staging folders>` must
answer every official case with its status and payload, identical. FranceConnect-only cases
are called with a FranceConnect token whose identity is the case's; where the official
folders have no such token, the test writes one into an extra fixture folder.
"""
from __future__ import annotations

import json
from urllib.parse import unquote

import pytest
import requests
import yaml

from sandbox.population import fixtures as fixture_module
from sandbox.population import lookup
from sandbox.production.scopes import ScopeCatalogue, prune
from sandbox.production.spec import load_specs

from sandbox.api import transport

from sandbox.production import validation_rules
from sandbox.production.errors import ParameterErrors

from .conftest import RECIPIENT, require_reference, token_for

FC_PARAM_NAMES = {"given_name", "family_name", "birthdate", "gender", "birthplace"}
IDENTITY_PARAMS = lookup.IDENTITY_PARAMS | {"prenoms[]"}




def _identity(params: dict) -> dict:
    canon = lookup.canonical_identity(params)
    identity = {"active": True, "scope": " ".join(["openid"] + ScopeCatalogue().all_scopes()),
                "family_name": params.get("family_name") or _first(params, "nomNaissance", "nom")}
    if "prenoms" in canon:
        identity["given_name_array"] = list(canon["prenoms"])
        identity["given_name"] = " ".join(canon["prenoms"])
    if {"annee", "mois", "jour"} <= canon.keys():
        identity["birthdate"] = f"{int(canon['annee']):04d}-{int(canon['mois']):02d}-{int(canon['jour']):02d}"
    if "sexe" in canon:
        identity["gender"] = "female" if canon["sexe"] == "f" else "male"
    if "lieu" in canon:
        identity["birthplace"] = canon["lieu"]
    if "pays" in canon:
        identity["birthcountry"] = canon["pays"]
    return identity


def _served(case, op):
    """The official payload less the fields production's serializer never emits (`withheld` in
    operations.yml: the `regime` of composition-familiale-v2, which
    siade/app/serializers/api_particulier/cnav/quotient_familial_v2/v2.rb does not have)."""
    scopes = CATALOGUE.get(op.operation_id)
    if case.status != 200 or scopes is None or not scopes.withheld:
        return case.payload
    return prune(case.payload, scopes.withheld, None)


CATALOGUE = ScopeCatalogue()


def _first(params, *names):
    return next((str(params[n]) for n in names if params.get(n) not in (None, "")), None)


def _query(op, params, france_connect=False):
    query = []
    for name, value in params.items():
        spec_name = next((p.name for p in op.params if p.key == name.removesuffix("[]")), name)
        for item in value if isinstance(value, list) else [value]:
            query.append((spec_name, str(item).lower() if isinstance(item, bool) else str(item)))
    if op.v3 or france_connect:  # production requires it on v3 and on v2 FranceConnect calls
        query.append(("recipient", RECIPIENT))
    return query


# Official cases production's code cannot answer as the staging does, and why (paths under
# siade/ of datagouv/apistration). Every other case is answered with its status and payload.
RETIRED_REASON = "config/routes/api_particulier.rb: the route is retired, production answers 410"
REFUSED_REASONS = {
    "api_particulier_v2_cnav_quotient_familial_v2/200-couple-2_enfants-cas-etranger-qf_msa_600.yaml":
        "app/interactors/civility/validate_nom_naissance.rb: no birth name",
    "api_particulier_v2_cnav_quotient_familial_v2/200-identite-cas-etranger-qf_424.yaml":
        "app/interactors/civility/validate_nom_naissance.rb: no birth name",
    "api_particulier_v2_mesri_student_status/ine_697720085AL.yaml":
        "app/interactors/service_user/validate_ine.rb: no INE format ends with a letter pair outside A-H, J, K",
    "api_particulier_v2_mesri_student_status/ine_697720085AO.yaml":
        "app/interactors/service_user/validate_ine.rb: no INE format ends with a letter pair outside A-H, J, K",
    "api_particulier_v3_cnav_complementaire_sante_solidaire_with_civility/200-giraud-ines-feminin-enfant.yaml":
        "app/interactors/civility/validate_code_cog_insee_pays_naissance.rb: no birth country (00400)",
    "api_particulier_v3_cnous_etudiant_boursier_with_civility/404.yaml":
        "app/interactors/civility/validate_prenoms.rb, validate_date_naissance.rb: a birth name only (00421, 00422)",
    "api_particulier_v3_cnous_etudiant_boursier_with_ine/404.yaml":
        "app/interactors/service_user/validate_ine.rb: no INE (00360)",
    "api_particulier_v3_men_scolarites_with_civility/504.yaml":
        "app/interactors/civility/validate_sexe_etat_civil.rb: `sexe` sent, not `sexeEtatCivil` (00427)",
    "api_particulier_v3_mesri_statut_etudiant_with_civility/404.yaml":
        "app/interactors/civility/validate_nom_naissance.rb and the others: an INE only (00420...)",
    **{f"api_particulier_v3_dsnj_service_national_with_civility/{name}.yaml":
       "app/interactors/dsnj/service_national/validate_date_naissance.rb: the person is not 16 to 25 (39400)"
       for name in ("200_indetermine", "200_non_concerne", "200_pas_en_regle", "403_access_denied", "404",
                    "429_quota_exceeded", "502_bad_gateway", "504_gateway_timeout")},
    # the same organizer on the FranceConnect token's identity
    # (controllers/api_particulier/v3_and_more/dsnj/service_national_with_france_connect_controller.rb)
    "api_particulier_v3_dsnj_service_national_with_france_connect/fake_france_connect_service_national.yaml":
        "app/interactors/dsnj/service_national/validate_date_naissance.rb: Thomas Delatour, 1994, is not 16 to 25 "
        "(39400)",
    "api_particulier_v3_dsnj_service_national_with_france_connect/404.yaml":
        "app/interactors/dsnj/service_national/validate_prenoms.rb and the others: an identity of a birth name "
        "only (00421...)",
}


def production_refuses(op, query, headers, identity: dict | None = None) -> bool:
    """Production's own parameter rules (sandbox/production/validation_rules.py, tested against production's
    specs in tests/production/): real validation runs first, it is never mocked. `identity`: a FranceConnect
    call's, whose civil status some organizers judge too (DSNJ)."""
    from werkzeug.datastructures import Headers, MultiDict
    france_connect = op.france_connect and headers.get("Authorization", "").startswith("Bearer ") and not op.v3
    civility = lookup.france_connect_civility(identity) if identity is not None else None
    try:
        validation_rules.check(op.operation_id, op.v3, MultiDict(query), Headers(headers),
                               france_connect or op.france_connect_only, civility)
    except ParameterErrors:
        return True
    return False


@pytest.fixture(scope="module")
def staging():
    reference = require_reference()
    specs = [reference / "openapi" / "api-particulier-v2.yaml", reference / "openapi" / "api-particulier-v3.yaml"]
    operations = load_specs(specs).by_operation_id()
    loaded = fixture_module.load([reference / "staging-payloads"], operations)
    return reference, specs, operations, loaded


def _plan(operations, loaded, extra_fc_dir):
    """(case, how to call it) for every servable official case."""
    shadowed = {p.file for p in loaded.problems if "same params" in p.message}
    plan, tokens = [], {}
    for operation_id, cases in loaded.ordered.items():
        op = operations[operation_id]
        for case in cases:
            if case.file in shadowed:
                continue
            needs_fc = op.france_connect_only or bool(FC_PARAM_NAMES & case.params.keys())
            if needs_fc:
                token = f"replay-{len(tokens)}"  # own token: official ones hold other routes' scopes
                tokens[token] = _identity(case.params)
                plan.append((case, op, token))
            else:
                plan.append((case, op, None))
    folder = extra_fc_dir / "france_connect"
    folder.mkdir(parents=True)
    for token, identity in tokens.items():
        (folder / f"{token}.yml").write_text(yaml.safe_dump(
            {"description": "identité générée par le test de rejeu", "params": {"token": token}, "status": 200,
             "payload": {"token_introspection": identity}}, allow_unicode=True))
    return plan


@pytest.mark.slow
def test_every_official_case_is_served_identically(staging, start_server, tmp_path):
    reference, specs, operations, loaded = staging
    extra = tmp_path / "extra"
    plan = _plan(operations, loaded, extra)
    args = [a for spec in specs for a in ("--spec", str(spec))]
    server = start_server(*args, "--fixtures", str(reference / "staging-payloads"), "--fixtures", str(extra),
                          "--rate-limit", "off", "--ip-rate-limit", "off")
    api_token = token_for()
    session = requests.Session()
    mismatches, ambiguous, unexplained, served = [], [], [], 0
    for case, op, fc_token in plan:
        headers = {"Authorization": f"Bearer {fc_token}"} if fc_token else (
            {"Authorization": f"Bearer {api_token}"} if op.v3 else {"X-Api-Key": api_token})
        params = case.params
        if fc_token:  # the identity comes with the token; the other parameters are still sent
            params = {k: v for k, v in case.params.items() if k not in IDENTITY_PARAMS}
        expected = case.status
        query = _query(op, params, france_connect=bool(fc_token))
        reason = None
        if op.path in transport.RETIRED:
            expected, reason = 410, RETIRED_REASON
        elif production_refuses(op, query, headers, _identity(case.params) if fc_token else None):
            expected = 422 if op.v3 else 400
            reason = REFUSED_REASONS.get(case.id) if case.status not in (400, 422) else "refused as staging does"
            if reason is None:
                unexplained.append(case.id)
        response = session.get(server.url + op.path, params=query, headers=headers, timeout=10)
        served += 1
        if unquote(response.headers.get("X-Sandbox-Case") or "") not in ("", case.id) and fc_token:
            ambiguous.append((case.id, response.headers.get("X-Sandbox-Case")))
            continue
        if response.status_code != expected:
            mismatches.append((case.id, expected, response.status_code, response.text[:90]))
        elif expected == case.status and case.status not in (400, 422) and response.json() != _served(case, op):
            # 400/422 come from real validation (never mocked), so only their status is compared
            mismatches.append((case.id, "payload differs", response.text[:200]))
    assert served == len(plan) > 500
    assert not unexplained, f"refused by production's rules with no reason named in REFUSED_REASONS: {unexplained}"
    assert not mismatches, "\n".join(map(str, mismatches))
    # Two official FranceConnect cases with one identity: only the first can ever answer.
    assert len(ambiguous) <= 10, "\n".join(map(str, ambiguous))


def test_fixtures_check_lists_official_cases_that_break_the_upstream_spec(staging, tmp_path):
    from click.testing import CliRunner

    from sandbox.cli import main
    reference, specs, _, _ = staging
    args = ["fixtures", "check"] + [a for s in specs for a in ("--spec", str(s))]
    result = CliRunner().invoke(main, args + ["--fixtures", str(reference / "staging-payloads")])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith(str(reference))]
    # the known impossible dates of the official MESRI data (2021-06-31...) are named, with their JSON path
    assert any("ine.yaml: $.payload.inscriptions[0].dateFinInscription" in line for line in lines), lines
    assert any("is not a 'date'" in line for line in lines)
