"""Tokens exactly like production: instant JWTs, where they are accepted, every auth error."""
from __future__ import annotations

import base64
import json
import subprocess
import sys
import time

import jwt
import pytest
import requests

from .conftest import RECIPIENT, SECRET, token_for, v2_headers, v3_headers

V2 = "/api/v2/situations-pole-emploi?identifiant=default"
V3 = f"/v3/france_travail/statut/identifiant?identifiant=default&recipient={RECIPIENT}"


def _v2_denied(response):
    assert response.status_code == 401, response.get_data(as_text=True)
    assert response.get_json()["error"] == "access_denied"


def _v3_error(response, status, code):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.get_json()["errors"][0]["code"] == code


def test_minted_token_has_productions_claims(client):
    response = client.post("/sandbox/tokens", json={"scopes": ["pole_emploi_identite"], "ttl": 120})
    assert response.status_code == 201
    body = response.get_json()
    claims = jwt.decode(body["token"], SECRET, algorithms=["HS256"])
    assert set(claims) >= {"uid", "jti", "scopes", "sub", "iat", "exp", "version"}
    assert claims["scopes"] == ["pole_emploi_identite"] == body["scopes"]
    assert claims["exp"] - claims["iat"] == 120
    assert body["expires_at"].endswith("Z")


def test_token_without_scopes_in_body_gets_all_scopes(client):
    body = client.post("/sandbox/tokens").get_json()
    assert "cnaf_enfants" in body["scopes"] and "pole_emploi_paiements" in body["scopes"]


@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded", "text/plain"])
def test_a_body_not_labelled_json_is_refused(client, content_type):
    """A form or text/plain body is what another site can make a browser send without a CORS
    preflight: a JSON body must say so (`curl -H 'Content-Type: application/json' -d '{...}'`)."""
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post("/sandbox/tokens", data='{"scopes": ["cnaf_enfants"], "ttl": 60}', headers=headers)
    assert response.status_code == 415, response.get_data(as_text=True)
    assert response.get_json()["error"] == "unsupported_media_type"
    assert "application/json" in response.get_json()["message"]
    labelled = client.post("/sandbox/tokens", data='{"scopes": ["cnaf_enfants"], "ttl": 60}',
                           headers={"Content-Type": "application/json; charset=utf-8"})
    assert labelled.status_code == 201 and labelled.get_json()["scopes"] == ["cnaf_enfants"]


def test_a_form_body_is_refused_clearly(client):
    response = client.post("/sandbox/tokens", data={"scopes": "cnaf_enfants"})
    assert response.status_code == 415
    assert "JSON" in response.get_json()["message"]


@pytest.mark.parametrize("payload", [{"scopes": ["not_a_scope"]}, {"scopes": "cnaf_enfants"}, {"ttl": 0},
                                     {"ttl": "3600"}, [1, 2]])
def test_bad_mint_requests_are_refused_clearly(client, payload):
    response = client.post("/sandbox/tokens", json=payload)
    assert response.status_code == 400
    assert response.get_json()["error"] == "bad_request"


def test_one_token_works_on_v2_and_v3_in_every_accepted_place(client):
    token = token_for()
    assert client.get(V2, headers=v2_headers(token)).status_code == 200
    assert client.get(V2, headers=v3_headers(token)).status_code == 200
    assert client.get(V2 + "&token=" + token).status_code == 200
    assert client.get(V3, headers=v3_headers(token)).status_code == 200


def test_v3_takes_every_transport_production_takes(client):
    """Bearer, then X-Api-Key, then ?token= on every version (siade/app/lib/user_resolution_middleware.rb);
    this test said "v3 only takes Bearer" until production's code proved otherwise (issue 16)."""
    token = token_for()
    assert client.get(V3, headers=v2_headers(token)).status_code == 200
    assert client.get(V3 + "&token=" + token).status_code == 200


def test_missing_and_unknown_tokens(client):
    _v2_denied(client.get(V2))
    _v2_denied(client.get(V2, headers=v2_headers("not-a-token")))
    _v3_error(client.get(V3), 401, "00101")
    _v3_error(client.get(V3, headers=v3_headers("not-a-token")), 401, "00101")


def test_bad_signature(client):
    forged = token_for(secret="another-secret-" + "y" * 40)
    _v2_denied(client.get(V2, headers=v2_headers(forged)))
    _v3_error(client.get(V3, headers=v3_headers(forged)), 401, "00101")


def test_expired_token(client):
    expired, _ = jwt.encode({"uid": "u", "jti": "expired-jti", "scopes": ["pole_emploi_identite"], "sub": "x",
                             "iat": int(time.time()) - 100, "exp": int(time.time()) - 10, "version": "1.0"},
                            SECRET, algorithm="HS256"), None
    _v2_flat(client.get(V2, headers=v2_headers(expired)), "Votre token est expiré")
    _v3_error(client.get(V3, headers=v3_headers(expired)), 401, "00103")


def test_revoked_token(client):
    body = client.post("/sandbox/tokens", json={"ttl": 600}).get_json()
    assert client.get(V3, headers=v3_headers(body["token"])).status_code == 200
    assert client.delete(f"/sandbox/tokens/{body['jti']}", headers=v2_headers(body["token"])).status_code == 204
    _v3_error(client.get(V3, headers=v3_headers(body["token"])), 401, "00105")
    _v2_flat(client.get(V2, headers=v2_headers(body["token"])), "Votre jeton est sur liste noire")
    # outside /api/v2/, production's blocklist answers in the JSON:API format
    _v3_error(client.get("/api/introspect", headers=v2_headers(body["token"])), 401, "00105")


def _v2_flat(response, detail):
    """v2 answers an expired or revoked token with production's flat list
    (siade/app/controllers/api_controller.rb, config/initializers/rack_attack.rb)."""
    assert response.status_code == 401, response.get_data(as_text=True)
    (message,) = response.get_json()["errors"]
    assert message.startswith(detail)


def test_alg_none_and_other_algorithms_are_refused(client):
    claims = jwt.decode(token_for(), SECRET, algorithms=["HS256"])
    header = base64.urlsafe_b64encode(json.dumps({"alg": "none", "typ": "JWT"}).encode()).rstrip(b"=").decode()
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    _v3_error(client.get(V3, headers=v3_headers(f"{header}.{body}.")), 401, "00101")
    hs512 = jwt.encode(claims, SECRET, algorithm="HS512")
    _v3_error(client.get(V3, headers=v3_headers(hs512)), 401, "00101")


def test_scope_escalation_by_editing_the_token_is_refused(client):
    token = token_for(["pole_emploi_identite"])
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["scopes"] = ["pole_emploi_identite", "pole_emploi_adresse", "cnaf_enfants"]
    edited = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    _v3_error(client.get(V3, headers=v3_headers(f"{header}.{edited}.{signature}")), 401, "00101")


def test_unknown_france_connect_token(client):
    path = f"/v3/dss/quotient_familial/france_connect?recipient={RECIPIENT}"
    _v3_error(client.get(path, headers=v3_headers("no-such-france-connect-token")), 401, "50002")
    response = client.get("/api/v2/composition-familiale-v2", headers=v3_headers("no-such-france-connect-token"))
    _v2_denied(response)


def test_token_is_never_echoed(client):
    token = token_for([])
    for response in (client.get(V2, headers=v2_headers(token)), client.get(V3, headers=v3_headers(token)),
                     client.get(V2 + "&token=" + token)):
        assert token not in response.get_data(as_text=True)
        assert all(token not in value for _, value in response.headers)
    journal = client.get("/sandbox/requests", headers=v2_headers(token_for())).get_data(as_text=True)
    assert token not in journal


def test_introspect_lists_the_tokens_scopes(client):
    token = token_for(["cnaf_enfants", "cnaf_adresse"])
    body = client.get("/api/introspect", headers=v2_headers(token)).get_json()
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert body == {"_id": claims["jti"], "name": "", "scopes": ["cnaf_adresse", "cnaf_enfants"]}


def test_fixed_opaque_tokens(make_app):
    app = make_app(static_tokens={"ci-secret-token-123": ("pole_emploi_identite",)})
    client = app.test_client()
    assert client.get(V2, headers=v2_headers("ci-secret-token-123")).status_code == 200
    assert client.get(V3, headers=v3_headers("ci-secret-token-123")).status_code == 200
    body = client.get("/api/introspect", headers=v2_headers("ci-secret-token-123")).get_json()
    assert body["scopes"] == ["pole_emploi_identite"]
    _v2_denied(client.get(V2, headers=v2_headers("ci-secret-token-124")))


def test_fixed_tokens_from_the_environment():
    from sandbox.settings import Settings
    settings = Settings.from_env({"SANDBOX_TOKENS": "abc=cnaf_enfants,cnaf_adresse;def=pole_emploi_paiements"})
    assert settings.static_tokens == {"abc": ("cnaf_enfants", "cnaf_adresse"), "def": ("pole_emploi_paiements",)}


def test_rate_limit_is_keyed_by_token(make_app):
    app = make_app(rate_limit="3/second", ip_rate_limit="off")
    client = app.test_client()
    first, second = token_for(), token_for()
    statuses = [client.get(V2, headers=v2_headers(first)).status_code for _ in range(5)]
    assert statuses.count(200) <= 3 and 429 in statuses
    assert client.get(V2, headers=v2_headers(second)).status_code == 200


@pytest.mark.slow
def test_cli_token_minted_before_the_server_starts_works(tmp_path, start_server):
    data_dir = tmp_path / "ci-data"
    env = {"SANDBOX_DATA_DIR": str(data_dir)}
    minted = subprocess.run([sys.executable, "-m", "sandbox", "token", "--scope", "pole_emploi_identite",
                             "--data-dir", str(data_dir)], capture_output=True, text=True, check=True,
                            env={**env, "PATH": "/usr/bin:/bin"})
    token = minted.stdout.strip()
    assert token.count(".") == 2
    server = start_server(env={**env, "SANDBOX_TOKEN_SECRET": ""})  # generated secret, read from the data folder
    response = requests.get(server.url + V3, headers=v3_headers(token), timeout=5)
    assert response.status_code == 200
    assert requests.get(server.url + "/api/introspect", headers=v2_headers(token), timeout=5).json()["scopes"] == [
        "pole_emploi_identite"]
    # a restart keeps minted tokens valid: the secret lives in the data folder
    server.stop()
    again = start_server(env={**env, "SANDBOX_TOKEN_SECRET": ""})
    assert requests.get(again.url + V3, headers=v3_headers(token), timeout=5).status_code == 200
