"""Clients that know FranceConnect by its host alone: `--franceconnect-port` serves the built-in
provider at FranceConnect's exact paths (/api/v2/authorize, /api/v2/token...), so that pointing
such a client at the sandbox means changing the host and nothing else.

france-connect-py (PyPI) stands for them: it joins fixed absolute paths to its `fc_base_url`
(its discovery fetch cannot be configured at all), so `.../franceconnect` as a base never reaches
the provider's prefixed paths. authlib stands for the clients that follow discovery and check
the id_token to the letter (issuer, nonce, at_hash).
"""
from __future__ import annotations

import re
import secrets
from html import unescape
from urllib.parse import parse_qs, urlparse

import pytest
import requests

from ..conftest import RECIPIENT, free_port

CALLBACK = "http://rp.example.test/callback"
LOGOUT = "http://rp.example.test/logged-out"
CITIZEN = "cnaf_parent_isole"  # Anne-Sophie LE GOFF (fixtures/france_connect/cnaf.yml)


def _hidden(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found, f"no {name} field in the page"
    return unescape(found.group(1))


def _query(location: str) -> dict:
    return {k: v[0] for k, v in parse_qs(urlparse(location).query).items()}


def _v3(server, token):
    return requests.get(f"{server.url}/v3/dss/quotient_familial/france_connect", params={"recipient": RECIPIENT},
                        headers={"Authorization": f"Bearer {token}"}, timeout=10)


@pytest.mark.slow
def test_france_connect_py_works_by_changing_its_host_alone(start_server):
    """A service provider using france-connect-py, configured with the sandbox's FranceConnect host
    as `fc_base_url` (the production value would be https://fcp-low.integ01.dev-franceconnect.fr)."""
    from france_connect.clients import FranceConnect
    from france_connect.enums import Scopes

    fc_port = free_port()
    server = start_server("--workers", "2", "--franceconnect-port", str(fc_port))
    host = f"http://127.0.0.1:{fc_port}"
    fc = FranceConnect(client_id="sandbox", client_secret="sandbox",
                       scopes=[Scopes.OPEN_ID, Scopes.IDENTITE_PIVOT, "cnaf_quotient_familial"],
                       login_callback_url=CALLBACK, logout_callback_url=LOGOUT, fc_base_url=host)

    configuration = fc.get_configuration()
    assert configuration["issuer"] == host + "/api/v2"
    assert configuration["authorization_endpoint"] == host + "/api/v2/authorize"
    assert configuration["token_endpoint"] == host + "/api/v2/token"

    # the user's side: the login URL the library built, the citizen picker, the consent page,
    # all reached on the provider's own port
    url, nonce, state = fc.get_authentication_url()
    assert url.startswith(host + "/api/v2/authorize?")
    session = requests.Session()
    picker = session.get(url, timeout=10)
    assert picker.status_code == 200, picker.text
    chosen = session.post(f"{host}/franceconnect/interaction/choose", timeout=10,
                          data={"interaction": _hidden(picker.text, "interaction"), "citizen": CITIZEN})
    assert chosen.status_code == 200 and "LE GOFF" in chosen.text
    consented = session.post(f"{host}/franceconnect/interaction/consent", allow_redirects=False, timeout=10,
                             data={"interaction": _hidden(chosen.text, "interaction"), "citizen": CITIZEN,
                                   "scope": "cnaf_quotient_familial", "decision": "accept"})
    assert consented.status_code == 302 and consented.headers["Location"].startswith(CALLBACK)
    back = _query(consented.headers["Location"])
    assert back["state"] == state

    raw, id_token = fc.get_id_token(back["code"])  # the library checks the signature with the port's JWKS
    assert id_token["nonce"] == nonce and id_token["iss"] == host + "/api/v2" and id_token["acr"] == "eidas1"
    user = fc.get_user_info(raw["access_token"])
    assert (user["family_name"], user["given_name"], user["birthdate"]) == ("LE GOFF", "Anne-Sophie", "1985-11-03")
    assert user["sub"] == id_token["sub"]

    # the access token works on API Particulier, on the main port
    family = _v3(server, raw["access_token"])
    assert family.status_code == 200, family.text
    assert family.json()["data"]["quotient_familial"]["valeur"] == 385

    out = requests.get(fc.get_logout_url(raw["id_token"], state), allow_redirects=False, timeout=10)
    assert out.status_code == 302 and out.headers["Location"].startswith(LOGOUT)
    assert _query(out.headers["Location"])["state"] == state
    assert _v3(server, raw["access_token"]).json()["errors"][0]["code"] == "50002"


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # authlib.jose: still the client's own JOSE code
def test_a_discovery_client_checks_issuer_and_at_hash_on_either_port(start_server):
    """A service provider using authlib: discovery, then the id_token checked as OpenID Connect
    wants it (issuer of the discovery it read, nonce, at_hash of the access token it got)."""
    from authlib.integrations.requests_client import OAuth2Session
    from authlib.jose import JsonWebKey, jwt
    from authlib.oidc.core import CodeIDToken
    from joserfc.errors import InvalidClaimError  # what authlib's OIDC claims raise

    fc_port = free_port()
    server = start_server("--workers", "1", "--franceconnect-port", str(fc_port))
    for base, issuer in ((f"http://127.0.0.1:{fc_port}", f"http://127.0.0.1:{fc_port}/api/v2"),
                         (server.url, server.url + "/franceconnect/api/v2")):
        discovery = requests.get(issuer + "/.well-known/openid-configuration", timeout=10).json()
        assert discovery["issuer"] == issuer
        assert all(discovery[k].startswith(issuer + "/") for k in
                   ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri",
                    "end_session_endpoint"))
        client = OAuth2Session("sandbox", "sandbox", scope="openid identite_pivot", redirect_uri=CALLBACK,
                               token_endpoint_auth_method="client_secret_post", leeway=5)
        nonce = secrets.token_urlsafe(32)
        url, state = client.create_authorization_url(discovery["authorization_endpoint"],
                                                     state=secrets.token_urlsafe(32), nonce=nonce,
                                                     acr_values="eidas1", login_hint=CITIZEN, prompt="none")
        answer = requests.get(url, allow_redirects=False, timeout=10)
        assert answer.status_code == 302, answer.text
        token = client.fetch_token(discovery["token_endpoint"], authorization_response=answer.headers["Location"])

        keys = JsonWebKey.import_key_set(requests.get(discovery["jwks_uri"], timeout=10).json())
        checks = {"iss": {"essential": True, "value": issuer}, "at_hash": {"essential": True}}
        claims = jwt.decode(token["id_token"], keys, claims_cls=CodeIDToken, claims_options=checks,
                            claims_params={"nonce": nonce, "client_id": "sandbox",
                                           "access_token": token["access_token"]})
        claims.validate()  # at_hash: the left half of the access token's SHA-256, base64url
        other = jwt.decode(token["id_token"], keys, claims_cls=CodeIDToken, claims_options=checks,
                           claims_params={"nonce": nonce, "client_id": "sandbox",
                                          "access_token": token["access_token"][:-2] + "xx"})
        with pytest.raises(InvalidClaimError, match="at_hash"):
            other.validate()  # the library really compares it: another token does not pass

    # the provider's port serves FranceConnect only; the main port's /api/v2 stays API Particulier's
    elsewhere = requests.get(f"http://127.0.0.1:{fc_port}/v3/dss/quotient_familial/france_connect",
                             params={"recipient": RECIPIENT}, timeout=10)
    assert elsewhere.status_code == 404 and elsewhere.json()["error"] == "not_found"
    api = requests.get(f"{server.url}/api/v2/composition-familiale-v2", params={"recipient": RECIPIENT},
                       headers={"X-Api-Key": "pas-un-jeton"}, timeout=10)
    assert api.status_code == 401 and "error" in api.json()
