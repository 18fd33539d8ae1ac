"""The built-in FranceConnect, end to end, as a service provider sees it.

A real OpenID Connect client (authlib) runs discovery, authorize (the non-interactive path),
token and userinfo against a real gunicorn with two workers, so that the code, the token and
the API calls land on different processes; then the access token calls FranceConnect routes and
gets the citizen's data masked by the consent, and production's errors when it should.
"""
from __future__ import annotations

import secrets
import time
from urllib.parse import parse_qs, urlparse

import pytest
import requests

from .conftest import RECIPIENT

CALLBACK = "http://rp.example.test/callback"
CITIZEN = "cnaf_parent_isole"  # Anne-Sophie LE GOFF (fixtures/france_connect/cnaf.yml)
PREFIX = "/franceconnect/api/v2"


def _random() -> str:
    return secrets.token_urlsafe(32)  # FranceConnect wants state and nonce of 32 characters or more


def _login(base, scope, citizen=CITIZEN, **extra):
    """authorize (non-interactive) -> token with authlib; (client, token, nonce, discovery)."""
    from authlib.integrations.requests_client import OAuth2Session

    discovery = requests.get(base + PREFIX + "/.well-known/openid-configuration", timeout=10)
    assert discovery.status_code == 200, discovery.text
    discovery = discovery.json()
    client = OAuth2Session("sandbox", "sandbox", scope=scope, redirect_uri=CALLBACK,
                           token_endpoint_auth_method="client_secret_post",
                           leeway=5)  # authlib's default 60 s would find a FranceConnect token (60 s) expired at once
    nonce = _random()
    url, state = client.create_authorization_url(discovery["authorization_endpoint"], state=_random(), nonce=nonce,
                                                 acr_values="eidas1", login_hint=citizen, prompt="none", **extra)
    answer = requests.get(url, allow_redirects=False, timeout=10)
    assert answer.status_code == 302, answer.text
    back = answer.headers["Location"]
    assert back.startswith(CALLBACK) and parse_qs(urlparse(back).query)["state"] == [state]
    token = client.fetch_token(discovery["token_endpoint"], authorization_response=back)
    return client, token, nonce, discovery


def _v3(base, path, token):
    return requests.get(f"{base}{path}", params={"recipient": RECIPIENT},
                        headers={"Authorization": f"Bearer {token}"}, timeout=10)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # authlib.jose: still the client's own JOSE code
def test_a_real_oidc_client_logs_in_and_calls_the_api_across_workers(start_server):
    from authlib.jose import JsonWebKey, jwt
    from authlib.oidc.core import CodeIDToken

    server = start_server("--workers", "2")
    base = server.url
    client, token, nonce, discovery = _login(
        base, "openid identite_pivot email cnaf_quotient_familial cnaf_allocataires complementaire_sante_solidaire")
    assert discovery["issuer"] == base + PREFIX and discovery["acr_values_supported"] == ["eidas1"]

    keys = JsonWebKey.import_key_set(requests.get(discovery["jwks_uri"], timeout=10).json())
    id_token = jwt.decode(token["id_token"], keys, claims_cls=CodeIDToken,
                          claims_options={"iss": {"essential": True, "value": discovery["issuer"]}},
                          claims_params={"nonce": nonce, "client_id": "sandbox"})
    id_token.validate()
    assert id_token["acr"] == "eidas1" and len(id_token["sub"]) == 66

    answer = client.get(discovery["userinfo_endpoint"])
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("application/jwt")
    userinfo = jwt.decode(answer.text, keys)
    assert userinfo["sub"] == id_token["sub"]
    assert (userinfo["family_name"], userinfo["given_name"], userinfo["birthdate"], userinfo["gender"],
            userinfo["birthplace"], userinfo["birthcountry"]) == ("LE GOFF", "Anne-Sophie", "1985-11-03", "female",
                                                                   "29019", "99100")
    assert "email" in userinfo and "preferred_username" not in userinfo  # only what the scopes release

    access = token["access_token"]
    family = _v3(base, "/v3/dss/quotient_familial/france_connect", access)
    assert family.status_code == 200, family.text
    data = family.json()["data"]
    assert data["allocataires"][0]["nom_naissance"] == "LE GOFF"
    assert data["quotient_familial"]["valeur"] == 385
    assert "enfants" not in data and "adresse" not in data  # not consented: masked
    health = requests.get(f"{base}/api/v2/complementaire-sante-solidaire", params={"recipient": RECIPIENT},
                          headers={"Authorization": f"Bearer {access}"}, timeout=10)
    assert health.status_code == 200, health.text
    assert health.json()["status"] == "beneficiaire_sans_participation_financiere"

    refused = _v3(base, "/v3/dss/revenu_solidarite_active/france_connect", access)  # RSA was not consented
    assert refused.status_code == 403 and refused.json()["errors"][0]["code"] == "00100"

    # logout revokes the session's access token on every worker
    hint = {"id_token_hint": token["id_token"], "state": _random(), "post_logout_redirect_uri": CALLBACK}
    out = requests.get(discovery["end_session_endpoint"], params=hint, allow_redirects=False, timeout=10)
    assert out.status_code == 302 and parse_qs(urlparse(out.headers["Location"]).query)["state"] == [hint["state"]]
    for _ in range(4):
        gone = _v3(base, "/v3/dss/quotient_familial/france_connect", access)
        assert gone.status_code == 401 and gone.json()["errors"][0]["code"] == "50002"
    assert client.get(discovery["userinfo_endpoint"]).status_code == 401


def test_a_code_is_good_once_and_a_replay_withdraws_its_token(client):
    query = {"client_id": "sandbox", "redirect_uri": CALLBACK, "response_type": "code", "state": _random(),
             "nonce": _random(), "acr_values": "eidas1", "scope": "openid identite_pivot cnaf_quotient_familial",
             "login_hint": CITIZEN, "prompt": "none"}
    back = client.get(PREFIX + "/authorize", query_string=query).headers["Location"]
    form = {"grant_type": "authorization_code", "code": parse_qs(urlparse(back).query)["code"][0],
            "redirect_uri": CALLBACK, "client_id": "sandbox", "client_secret": "sandbox"}
    first = client.post(PREFIX + "/token", data=form)
    assert first.status_code == 200
    access = first.json["access_token"]
    path = f"/v3/dss/quotient_familial/france_connect?recipient={RECIPIENT}"
    assert client.get(path, headers={"Authorization": f"Bearer {access}"}).status_code == 200
    again = client.post(PREFIX + "/token", data=form)
    assert again.status_code == 400 and again.json["error"] == "invalid_grant"
    assert client.get(path, headers={"Authorization": f"Bearer {access}"}).json["errors"][0]["code"] == "50002"


@pytest.mark.parametrize("change, error", [
    ({"state": "court"}, "invalid_request"),
    ({"nonce": None}, "invalid_request"),
    ({"acr_values": "eidas2"}, "invalid_request"),
    ({"scope": "identite_pivot"}, "invalid_scope"),
    ({"scope": "openid cnaf_pas_un_scope"}, "invalid_scope"),
    ({"login_hint": "personne"}, "login_required"),
])
def test_authorize_refuses_what_franceconnect_refuses(client, change, error):
    query = {"client_id": "sandbox", "redirect_uri": CALLBACK, "response_type": "code", "state": "s" * 32,
             "nonce": "n" * 32, "acr_values": "eidas1", "scope": "openid identite_pivot",
             "login_hint": CITIZEN, "prompt": "none"}
    query.update(change)
    answer = client.get(PREFIX + "/authorize", query_string={k: v for k, v in query.items() if v is not None})
    assert answer.status_code == 302
    assert parse_qs(urlparse(answer.headers["Location"]).query)["error"] == [error]


def test_an_unknown_client_or_a_forbidden_address_is_shown_not_redirected(make_app):
    app = make_app(franceconnect_clients="mairie:s3cret=https://mairie.example/cb")
    client = app.test_client()
    base = {"response_type": "code", "scope": "openid", "state": "s" * 32, "nonce": "n" * 32, "acr_values": "eidas1"}
    for query in ({"client_id": "inconnu", "redirect_uri": CALLBACK},
                  {"client_id": "mairie", "redirect_uri": "https://ailleurs.example/cb"}):
        answer = client.get(PREFIX + "/authorize", query_string={**base, **query})
        assert answer.status_code == 400 and "Connexion impossible" in answer.get_data(as_text=True)
    ok = client.get(PREFIX + "/authorize", query_string={**base, "client_id": "mairie",
                                                         "redirect_uri": "https://mairie.example/cb"})
    assert ok.status_code == 200 and "Se connecter avec FranceConnect" in ok.get_data(as_text=True)


def test_an_expired_access_token_gets_productions_error(make_app, monkeypatch):
    app = make_app(franceconnect_ttl=30)
    client = app.test_client()
    query = {"client_id": "sandbox", "redirect_uri": CALLBACK, "response_type": "code", "state": _random(),
             "nonce": _random(), "acr_values": "eidas1", "scope": "openid identite_pivot cnaf_quotient_familial",
             "login_hint": CITIZEN, "prompt": "none"}
    back = client.get(PREFIX + "/authorize", query_string=query).headers["Location"]
    access = client.post(PREFIX + "/token", data={
        "grant_type": "authorization_code", "code": parse_qs(urlparse(back).query)["code"][0],
        "redirect_uri": CALLBACK, "client_id": "sandbox", "client_secret": "sandbox"}).json["access_token"]
    later = time.time() + 31
    monkeypatch.setattr("sandbox.franceconnect.provider.time.time", lambda: later)
    v3 = client.get(f"/v3/dss/quotient_familial/france_connect?recipient={RECIPIENT}",
                    headers={"Authorization": f"Bearer {access}"})
    assert v3.status_code == 401 and v3.json["errors"][0]["code"] == "50002"
    v2 = client.get(f"/api/v2/complementaire-sante-solidaire?recipient={RECIPIENT}",
                    headers={"Authorization": f"Bearer {access}"})
    assert v2.status_code == 401 and v2.json["error"] == "access_denied"


def test_the_fake_tokens_still_work(client):
    answer = client.get(f"/v3/dss/quotient_familial/france_connect?recipient={RECIPIENT}",
                        headers={"Authorization": "Bearer cnaf_parent_isole"})
    assert answer.status_code == 200 and answer.json["data"]["quotient_familial"]["valeur"] == 385


def test_the_personas_list_groups_citizens_by_household(client):
    households = client.get("/franceconnect/personas").json["households"]
    by_id = {p["id"]: (h, p) for h in households for p in h["personas"]}
    household, camille = by_id["tout"]
    assert camille["identity"]["family_name"] == "BACASABLE"
    assert any(a["path"] == "/v3/dss/quotient_familial/france_connect" and a["status"] == 200
               for a in camille["answers"])
    assert {o["name"] for o in household["others"]} >= {"Inès Essai"}  # her child, listed by the CAF


def test_the_pytest_plugin_gives_a_franceconnect_token(particulier_sandbox):
    token = particulier_sandbox.france_connect_token("cnaf_parent_isole", scopes=["cnaf_quotient_familial"])
    answer = requests.get(particulier_sandbox.url("/v3/dss/quotient_familial/france_connect"),
                          params={"recipient": RECIPIENT}, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert answer.status_code == 200 and answer.json()["data"]["quotient_familial"]["valeur"] == 385
    assert "allocataires" not in answer.json()["data"]
    with pytest.raises(ValueError, match="login_hint"):
        particulier_sandbox.france_connect_token("personne")


SAME_HOUSEHOLD_ROUTES = ("quotient_familial", "allocation_enfant_handicape", "allocation_soutien_familial",
                         "complementaire_sante_solidaire", "revenu_solidarite_active", "prime_activite")


def test_a_family_is_the_same_household_on_every_route(client):
    query = {"client_id": "sandbox", "redirect_uri": CALLBACK, "response_type": "code", "state": _random(),
             "nonce": _random(), "acr_values": "eidas1", "login_hint": "famille_sablier", "prompt": "none",
             "scope": "openid identite_pivot cnaf_quotient_familial cnaf_allocataires cnaf_enfants "
                      "cnav_allocation_enfant_handicape allocation_soutien_familial complementaire_sante_solidaire "
                      "revenu_solidarite_active prime_activite"}
    back = client.get(PREFIX + "/authorize", query_string=query).headers["Location"]
    access = client.post(PREFIX + "/token", data={
        "grant_type": "authorization_code", "code": parse_qs(urlparse(back).query)["code"][0],
        "redirect_uri": CALLBACK, "client_id": "sandbox", "client_secret": "sandbox"}).json["access_token"]
    for route in SAME_HOUSEHOLD_ROUTES:
        answer = client.get(f"/v3/dss/{route}/france_connect?recipient={RECIPIENT}",
                            headers={"Authorization": f"Bearer {access}"})
        assert answer.status_code == 200, (route, answer.json)
        assert answer.headers["X-Sandbox-Case"].endswith("200_fc_sablier_margot.yaml"), route
    family = client.get(f"/v3/dss/quotient_familial/france_connect?recipient={RECIPIENT}",
                        headers={"Authorization": f"Bearer {access}"}).json["data"]
    assert [c["prenoms"] for c in family["enfants"]] == ["MAËL", "NOLWENN ANNE", "GAËL"]
    v2 = client.get(f"/api/v2/composition-familiale-v2?recipient={RECIPIENT}",
                    headers={"Authorization": f"Bearer {access}"})
    assert v2.status_code == 200 and {e["prenoms"] for e in v2.json["enfants"]} == {"MAËL", "NOLWENN ANNE", "GAËL"}


def _code_and_token(client, base_url="http://localhost", prefix=PREFIX, citizen=CITIZEN):
    nonce = _random()
    query = {"client_id": "sandbox", "redirect_uri": CALLBACK, "response_type": "code", "state": _random(),
             "nonce": nonce, "acr_values": "eidas1", "scope": "openid identite_pivot cnaf_quotient_familial",
             "login_hint": citizen,
             "prompt": "none"}
    back = client.get(prefix + "/authorize", query_string=query, base_url=base_url).headers["Location"]
    answer = client.post(prefix + "/token", base_url=base_url, data={
        "grant_type": "authorization_code", "code": parse_qs(urlparse(back).query)["code"][0],
        "redirect_uri": CALLBACK, "client_id": "sandbox", "client_secret": "sandbox"})
    assert answer.status_code == 200, answer.json
    return nonce, answer.json


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # authlib.jose: still the client's own JOSE code
def test_the_id_token_carries_the_at_hash_an_oidc_library_checks(client):
    from authlib.jose import JsonWebKey, jwt
    from authlib.oidc.core import CodeIDToken
    from joserfc.errors import InvalidClaimError

    nonce, token = _code_and_token(client)
    keys = JsonWebKey.import_key_set(client.get(PREFIX + "/jwks").json)

    def claims(access_token):
        return jwt.decode(token["id_token"], keys, claims_cls=CodeIDToken,
                          claims_options={"at_hash": {"essential": True}},
                          claims_params={"nonce": nonce, "client_id": "sandbox", "access_token": access_token})

    claims(token["access_token"]).validate()
    with pytest.raises(InvalidClaimError, match="at_hash"):
        claims(token["access_token"] + "x").validate()


def test_on_its_own_port_the_provider_answers_at_franceconnects_paths(make_app):
    """The dispatch by listening port (SERVER_PORT), as gunicorn sets it; the real server and
    client libraries: tests/real_clients/test_franceconnect_own_port.py."""
    client = make_app(franceconnect_port=9443).test_client()
    own = "http://localhost:9443"
    discovery = client.get("/api/v2/.well-known/openid-configuration", base_url=own).json
    assert discovery["issuer"] == own + "/api/v2" and discovery["token_endpoint"] == own + "/api/v2/token"
    nonce, token = _code_and_token(client, base_url=own, prefix="/api/v2")
    from joserfc import jwt
    from joserfc.jwk import KeySet
    keys = KeySet.import_key_set(client.get("/api/v2/jwks", base_url=own).json)
    assert jwt.decode(token["id_token"], keys).claims["iss"] == own + "/api/v2"
    answer = client.get(f"/v3/dss/quotient_familial/france_connect?recipient={RECIPIENT}",
                        headers={"Authorization": f"Bearer {token['access_token']}"})  # the main port
    assert answer.status_code == 200 and answer.json["data"]["quotient_familial"]["valeur"] == 385

    assert client.get("/franceconnect/personas", base_url=own).status_code == 200  # its own pages too
    elsewhere = client.get(f"/v3/dss/quotient_familial/france_connect?recipient={RECIPIENT}", base_url=own,
                           headers={"Authorization": f"Bearer {token['access_token']}"})
    assert elsewhere.status_code == 404 and elsewhere.json["error"] == "not_found"
    main = client.get(PREFIX + "/.well-known/openid-configuration")  # the main port is unchanged
    assert main.json["issuer"] == "http://localhost" + PREFIX
    v2 = client.get("/api/v2/.well-known/openid-configuration")
    assert v2.status_code == 404 and "issuer" not in (v2.get_json(silent=True) or {})


def test_the_port_setting_is_checked():
    from sandbox.settings import ConfigError, Settings

    assert Settings.from_env({"SANDBOX_FRANCECONNECT_PORT": "9443"}).franceconnect_port == 9443
    for port in (8000, 0, 70000):
        with pytest.raises(ConfigError, match="franceconnect-port"):
            Settings(port=8000, franceconnect_port=port)


def test_a_citizen_born_abroad_has_franceconnects_empty_birthplace(client):
    """FranceConnect sends birthplace "" and the country's COG code as birthcountry for a birth
    abroad; a v2 case naming the country as "lieu de naissance" (MESRI's lieuDeNaissance=99350)
    does not make it her birthplace."""
    citizens = {p["id"]: p["identity"] for h in client.get("/franceconnect/personas").json["households"]
                for p in h["personas"]}
    ines = citizens["etudiant_3"]  # Inès DÉMO, born in Morocco; api_particulier_v2_mesri_student_status too
    assert (ines["birthplace"], ines["birthcountry"]) == ("", "99350")
    for identity in citizens.values():
        if identity["birthcountry"] == "99100":
            assert len(identity["birthplace"]) == 5 and not identity["birthplace"].startswith("99"), identity
        else:
            assert identity["birthplace"] == "", identity
    assert sum(i["birthcountry"] != "99100" for i in citizens.values()) >= 20


def test_the_directory_says_what_the_dsnj_answers_an_identity_that_aged_out(make_app, monkeypatch):
    """The DSNJ judges the age of the identity on its FranceConnect route (16 to 25): once Anaïs (born
    28 February 2003) is 26, the citizens' list shows the refusal the API answers, not her case."""
    import datetime

    from sandbox.production import clock

    monkeypatch.setattr(clock, "_FROZEN", datetime.date(2029, 3, 1))
    client = make_app().test_client()
    path = "/v3/dsnj/service_national/france_connect"
    answer = client.get(path, query_string={"recipient": RECIPIENT}, headers={"Authorization": "Bearer divers_2"})
    assert answer.status_code == 422 and answer.json["errors"][0]["code"] == "39400"
    personas = [p for h in client.get("/franceconnect/personas").json["households"] for p in h["personas"]]
    anais = next(p for p in personas if p["id"] == "divers_2")
    assert [(a["status"], a["case"]) for a in anais["answers"] if a["path"] == path] == [(422, None)]
    zoe = next(p for p in personas if p["id"] == "divers_4")  # 19: her case answers
    assert [a["status"] for a in zoe["answers"] if a["path"] == path] == [200]
