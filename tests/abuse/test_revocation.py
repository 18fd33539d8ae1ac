"""A stranger who saw a token's jti (in a log, a journal, a screenshot) cannot revoke it, and no
jti that names no token leaves anything behind. A token revokes itself only."""
from __future__ import annotations

import uuid

import pytest

from ..conftest import RECIPIENT, v2_headers, v3_headers

V3_ROUTE = "/v3/france_travail/statut/identifiant"


@pytest.fixture
def sandbox(make_app):
    app = make_app(ip_rate_limit="off")
    return app.test_client(), app.extensions["sandbox"].store


def mint(client):
    minted = client.post("/sandbox/tokens", json={"ttl": 600})
    assert minted.status_code == 201
    return minted.get_json()


def calls(client, token):
    got = client.get(V3_ROUTE, query_string={"identifiant": "default", "recipient": RECIPIENT},
                     headers=v3_headers(token))
    return got.status_code


def test_a_stranger_cannot_revoke_anothers_token(sandbox):
    client, store = sandbox
    victim, stranger = mint(client), mint(client)
    assert calls(client, victim["token"]) == 200
    target = f"/sandbox/tokens/{victim['jti']}"

    assert client.delete(target).status_code == 401  # no token at all
    in_query = client.delete(target, query_string={"token": victim["token"]})  # as a link or a form would send it
    assert in_query.status_code == 401 and "?token=" in in_query.get_json()["reason"]
    other = client.delete(target, headers=v2_headers(stranger["token"]))
    assert other.status_code == 403 and other.get_json()["error"] == "forbidden"
    assert client.delete(target, headers=v2_headers("forged.jwt.value")).status_code == 401

    assert not store.is_revoked(victim["jti"])
    assert calls(client, victim["token"]) == 200, "the victim's calls answer as before"
    assert calls(client, stranger["token"]) == 200

    # the token itself may: then it is refused everywhere, and asking again is no error
    assert client.delete(target, headers={"Authorization": f"Bearer {victim['token']}"}).status_code == 204
    assert calls(client, victim["token"]) == 401
    assert client.delete(target, headers=v2_headers(victim["token"])).status_code == 204
    assert calls(client, stranger["token"]) == 200


def test_an_unknown_jti_adds_no_row(sandbox):
    client, store = sandbox
    caller = mint(client)
    for _ in range(20):  # bounded: each would have been a revocation row kept forever
        made_up = str(uuid.uuid4())
        assert client.delete(f"/sandbox/tokens/{made_up}", headers=v2_headers(caller["token"])).status_code == 403
        assert not store.is_revoked(made_up)
    assert client.delete("/sandbox/tokens/not-a-uuid", headers=v2_headers(caller["token"])).status_code == 404
    assert calls(client, caller["token"]) == 200
