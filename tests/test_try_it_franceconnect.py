"""The "try it" page's FranceConnect login: a token long enough to explore by hand (the page asks
for it), while API clients keep FranceConnect's own 60 s."""
from __future__ import annotations

import time
from urllib.parse import parse_qs, urlparse

import pytest

from .conftest import RECIPIENT

PREFIX = "/franceconnect/api/v2"
PAGE_CALLBACK = "http://localhost/franceconnect/essayer/retour"
CLIENT_CALLBACK = "http://rp.example.test/callback"
ROUTE = f"/v3/dss/quotient_familial/france_connect?recipient={RECIPIENT}"


def _code(client, redirect_uri):
    query = {"client_id": "sandbox", "redirect_uri": redirect_uri, "response_type": "code", "state": "s" * 32,
             "nonce": "n" * 32, "acr_values": "eidas1", "scope": "openid identite_pivot cnaf_quotient_familial",
             "login_hint": "cnaf_parent_isole", "prompt": "none"}
    back = client.get(PREFIX + "/authorize", query_string=query).headers["Location"]
    return parse_qs(urlparse(back).query)["code"][0]


def _token(client, redirect_uri, **extra):
    return client.post(PREFIX + "/token", data={"grant_type": "authorization_code", "code": _code(client, redirect_uri),
                                                "redirect_uri": redirect_uri, "client_id": "sandbox",
                                                "client_secret": "sandbox", **extra})


def _answers_at(client, monkeypatch, access, seconds_later):
    later = time.time() + seconds_later
    monkeypatch.setattr("sandbox.franceconnect.provider.time.time", lambda: later)
    status = client.get(ROUTE, headers={"Authorization": f"Bearer {access}"}).status_code
    monkeypatch.undo()
    return status


def test_the_page_asks_for_an_hour_and_api_clients_keep_60_seconds(client, monkeypatch):
    config = client.get("/franceconnect/essayer/config").get_json()
    assert (config["ttl"], config["api_ttl"]) == (3600, 60)

    page = _token(client, PAGE_CALLBACK, sandbox_ttl=str(config["ttl"]))
    assert page.status_code == 200 and page.json["expires_in"] == 3600
    assert _answers_at(client, monkeypatch, page.json["access_token"], 600) == 200
    assert _answers_at(client, monkeypatch, page.json["access_token"], 3601) == 401

    api = _token(client, CLIENT_CALLBACK)
    assert api.status_code == 200 and api.json["expires_in"] == 60
    assert _answers_at(client, monkeypatch, api.json["access_token"], 61) == 401
    plain_page = _token(client, PAGE_CALLBACK)  # the page's address without asking: FranceConnect's lifetime
    assert plain_page.json["expires_in"] == 60


@pytest.mark.parametrize("redirect_uri, ttl", [(CLIENT_CALLBACK, "3600"), (PAGE_CALLBACK, "3601"),
                                               (PAGE_CALLBACK, "0"), (PAGE_CALLBACK, "une heure")])
def test_a_longer_token_is_for_the_page_only_and_bounded(client, redirect_uri, ttl):
    answer = _token(client, redirect_uri, sandbox_ttl=ttl)
    assert answer.status_code == 400 and answer.json["error"] == "invalid_request", answer.json
    assert "sandbox_ttl" in answer.json["error_description"]
