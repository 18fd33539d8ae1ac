"""`--public`: what one client of a shared instance can no longer do to the others.

Each test has a bystander: a second token whose answers, taken before and after the attempt,
must be the same. Through the Flask test client (no server); tests/abuse/test_proxies.py and
test_nginx.py run the real thing.
"""
from __future__ import annotations

import json
import os
import stat

import pytest

from ..conftest import RECIPIENT, token_for, v2_headers, v3_headers

V3_ROUTE = "/v3/france_travail/statut/identifiant"
V3_DEFAULT = "api_particulier_v3_france_travail_statut_with_identifiant/200_default.yaml"
FC_ROUTE = "/v3/dss/allocation_adulte_handicape/france_connect"
SHARED_FC_TOKEN = "tout"  # fixtures/france_connect/tout.yml: everyone's


@pytest.fixture
def public(make_app):
    return make_app(public=True, ip_rate_limit="off").test_client()


def answer(client, token, identifiant="default", **headers):
    """What a client sees of a call: status, case, body."""
    got = client.get(V3_ROUTE, query_string={"identifiant": identifiant, "recipient": RECIPIENT},
                     headers={**v3_headers(token), **headers})
    return got.status_code, got.headers.get("X-Sandbox-Case"), got.get_json()


def test_a_global_persona_cannot_override_a_bundled_case_for_others(public):
    attacker, bystander = token_for(), token_for()
    before = answer(public, bystander)
    assert before[:2] == (200, V3_DEFAULT)

    refused = public.post("/sandbox/personas", headers=v2_headers(attacker), json={
        "like": V3_DEFAULT, "status": 503, "global": True,
        "payload": {"errors": [{"code": "37999", "title": "down", "detail": "down", "meta": {}}]}})
    assert refused.status_code == 403, refused.get_data(as_text=True)
    assert refused.get_json()["error"] == "forbidden" and "$.global" in refused.get_json()["reason"]

    # the same persona without `global` is the attacker's own: it answers the attacker only
    own = public.post("/sandbox/personas", headers=v2_headers(attacker),
                      json={"like": V3_DEFAULT, "payload": {"data": {"identite": {"prenom": "MALLORY"}}}})
    assert own.status_code == 201 and own.get_json()["global"] is False
    assert answer(public, attacker)[1] == own.get_json()["case"]
    assert answer(public, bystander) == before
    assert own.get_json()["id"] not in json.dumps(public.get("/sandbox/personas").get_json())


def test_global_personas_left_by_a_private_instance_on_the_same_store_are_not_served(make_app):
    # make_app's apps of one test name one data folder: they share its store (Settings.store_dir)
    private = make_app(ip_rate_limit="off").test_client()
    attacker, bystander = token_for(), token_for()
    made = private.post("/sandbox/personas", headers=v2_headers(attacker), json={
        "like": V3_DEFAULT, "global": True, "payload": {"data": {"identite": {"prenom": "MALLORY"}}}})
    assert made.status_code == 201 and made.get_json()["global"] is True
    assert answer(private, bystander)[1] == made.get_json()["case"]  # served to all there

    public = make_app(public=True, ip_rate_limit="off").test_client()
    assert answer(public, bystander)[:2] == (200, V3_DEFAULT)
    assert public.get(f"/sandbox/personas/{made.get_json()['id']}").status_code == 404
    # one made while the public instance serves: its index is brought up to date change by change
    later = private.post("/sandbox/personas", headers=v2_headers(attacker), json={
        "like": V3_DEFAULT, "global": True, "payload": {"data": {"identite": {"prenom": "EVE"}}}})
    assert later.status_code == 201 and answer(private, bystander)[1] == later.get_json()["case"]
    assert answer(public, bystander)[:2] == (200, V3_DEFAULT)
    assert public.get(f"/sandbox/personas/{later.get_json()['id']}").status_code == 404


def test_faults_are_off_whatever_the_flag_says(make_app):
    public = make_app(public=True, faults=True, ip_rate_limit="off").test_client()
    token, bystander = token_for(), token_for()
    before = answer(public, bystander)
    assert answer(public, token, **{"X-Sandbox-Fault": "unavailable"})[:2] == (200, V3_DEFAULT)
    assert answer(public, token, Prefer="code=503")[:2] == (200, V3_DEFAULT)
    assert answer(public, bystander) == before
    # the same instance without --public injects them
    private = make_app(faults=True, ip_rate_limit="off").test_client()
    assert answer(private, token, Prefer="code=503")[0] == 503


def test_the_fixtures_shared_france_connect_tokens_are_refused_on_sandbox_routes(public, make_app):
    for method, path in (("GET", "/sandbox/requests"), ("DELETE", "/sandbox/requests"),
                         ("GET", "/sandbox/personas"), ("POST", "/sandbox/personas")):
        refused = public.open(path, method=method, headers=v2_headers(SHARED_FC_TOKEN),
                              json={} if method == "POST" else None)
        assert refused.status_code == 403, (method, path, refused.get_data(as_text=True))
        assert refused.get_json()["error"] == "forbidden"
    # the API routes still take them, as production's integration environment does
    api = public.get(FC_ROUTE, query_string={"recipient": RECIPIENT}, headers=v3_headers(SHARED_FC_TOKEN))
    assert api.status_code == 200, api.get_data(as_text=True)
    # and a private instance keeps reading that identity's journal
    private = make_app(ip_rate_limit="off").test_client()
    assert private.get("/sandbox/requests", headers=v2_headers(SHARED_FC_TOKEN)).status_code == 200


def test_the_try_it_page_offers_no_global_persona(public, make_app):
    assert 'id="clone-global"' not in public.get("/docs/personas").get_data(as_text=True)
    assert 'id="clone-global"' in make_app().test_client().get("/docs/personas").get_data(as_text=True)


def test_data_files_are_private(make_settings, tmp_path):
    from sandbox import create_app
    data = tmp_path / "private-data"
    app = create_app(make_settings(token_secret=None, data_dir=data))
    app.test_client().get("/franceconnect/api/v2/jwks")
    assert stat.S_IMODE(os.stat(data).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(data / "store").st_mode) == 0o700
    for name in ("token-secret", "franceconnect-signing-key.pem", "store/data.mdb", "store/lock.mdb"):
        assert stat.S_IMODE(os.stat(data / name).st_mode) == 0o600, name
