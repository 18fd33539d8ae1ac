"""The request journal: `GET /sandbox/requests` (filters `path`, `since`) and `DELETE`.

Per token, newest first, bounded (`journal_size`, 1,000 by default: the oldest are dropped),
in the embedded LMDB store and in Redis; a token never sees another's calls; the `token`
query parameter is never written down.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from .conftest import RECIPIENT, token_for

PERSONAS = Path(__file__).parent / "example_downstream" / "personas"
V2 = "/api/v2/situations-pole-emploi"
V3 = "/v3/france_travail/statut/identifiant"
UNLIMITED = {"rate_limit": "off", "ip_rate_limit": "off"}


@pytest.fixture
def personas(tmp_path) -> Path:
    folder = tmp_path / "personas"
    shutil.copytree(PERSONAS, folder)
    return folder


@pytest.fixture
def make_client(make_app, personas):
    def factory(**settings):
        return make_app(fixtures=(personas,), **settings).test_client()
    return factory


def v2(client, token, identifiant="camille.exemple", **headers):
    return client.get(V2, query_string={"identifiant": identifiant}, headers={"X-Api-Key": token, **headers})


def v3(client, token, identifiant="camille.exemple"):
    return client.get(V3, query_string={"identifiant": identifiant, "recipient": RECIPIENT},
                      headers={"Authorization": f"Bearer {token}"})


def journal(client, token, **params):
    answer = client.get("/sandbox/requests", query_string=params, headers={"X-Api-Key": token})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return answer.get_json()["requests"]


def test_an_entry_says_what_was_called_and_what_answered(make_client):
    client, token = make_client(), token_for()
    v2(client, token)
    v3(client, token, "inconnu")

    newest, oldest = journal(client, token)

    assert newest["at"] >= oldest["at"]
    assert newest.pop("id") > oldest.pop("id") > 0
    assert oldest.pop("at").endswith("Z")
    assert oldest == {"method": "GET", "path": V2, "query": {"identifiant": "camille.exemple"}, "status": 200,
                      "case": "api_particulier_v2_pole_emploi_statut/200_inscrite_camille.yaml"}
    assert newest["path"] == V3 and newest["status"] == 404 and newest["case"] is None
    assert newest["query"] == {"identifiant": "inconnu", "recipient": RECIPIENT}
    assert newest["near_miss"] == {"case": "api_particulier_v3_france_travail_statut_with_identifiant/"
                                           "200_inscrite_camille.yaml",
                                   "missing": [], "unexpected": [], "different": ["identifiant"]}


def test_errors_are_journaled_too(make_client):
    client = make_client()
    denied, allowed = token_for(scopes=["cnaf_quotient_familial"]), token_for()
    assert v2(client, denied).status_code == 401  # authenticated, but the scope does not open the route
    assert client.get(V2, headers={"X-Api-Key": allowed}).status_code == 400  # `identifiant` missing

    assert [e["status"] for e in journal(client, denied)] == [401]
    assert [(e["status"], e["query"]) for e in journal(client, allowed)] == [(400, {})]


@pytest.mark.parametrize("backend", ["embedded", pytest.param("redis", marks=pytest.mark.slow)])  # redis-server
def test_a_small_journal_keeps_only_the_newest_calls(make_client, request, backend):
    settings = dict(journal_size=5, **UNLIMITED)
    if backend == "redis":
        settings["redis_url"] = request.getfixturevalue("redis_server").url
    client, token = make_client(**settings), token_for()

    for i in range(130):
        v2(client, token, f"personne-{i}")

    entries = journal(client, token)
    assert [e["query"]["identifiant"] for e in entries] == [f"personne-{i}" for i in range(129, 124, -1)]


def test_the_default_journal_keeps_the_newest_1000_of_1100_calls(make_client):
    client, token = make_client(**UNLIMITED), token_for()

    for i in range(1100):
        v2(client, token, f"personne-{i}")

    entries = journal(client, token)
    assert len(entries) == 1000
    assert entries[0]["query"]["identifiant"] == "personne-1099"
    assert entries[-1]["query"]["identifiant"] == "personne-100"
    assert [int(e["query"]["identifiant"].split("-")[1]) for e in entries] == list(range(1099, 99, -1))


def test_the_embedded_store_stays_bounded_when_tokens_alternate(make_client, tmp_path):
    """Storage, not only what is read back: each token's rows are trimmed as it writes."""
    client = make_client(journal_size=10, **UNLIMITED)
    first, second = token_for(), token_for()
    for i in range(120):
        v2(client, first, f"a-{i}")
        v2(client, second, f"b-{i}")

    store = client.application.extensions["sandbox"].store
    with store._env.begin() as txn:
        assert txn.stat(store._journal)["entries"] == 2 * 10
    assert [e["query"]["identifiant"] for e in journal(client, second)][:2] == ["b-119", "b-118"]


def test_a_token_never_sees_another_token_s_calls(make_client):
    client = make_client()
    alice, bob = token_for(), token_for()
    v2(client, alice, "alice")
    v3(client, bob, "bob")
    v2(client, bob, "bob")

    assert [e["query"]["identifiant"] for e in journal(client, alice)] == ["alice"]
    assert [e["query"]["identifiant"] for e in journal(client, bob)] == ["bob", "bob"]


def test_the_token_query_parameter_is_never_recorded(make_client):
    client, token = make_client(), token_for()
    assert client.get(f"{V2}?identifiant=camille.exemple&token={token}").status_code == 200

    answer = client.get(f"/sandbox/requests?token={token}")
    [entry] = answer.get_json()["requests"]
    assert entry["query"] == {"identifiant": "camille.exemple"}
    assert token not in answer.get_data(as_text=True)


def test_filter_by_path_is_exact_or_by_segment_prefix(make_client):
    client, token = make_client(), token_for()
    v2(client, token)
    v3(client, token)

    assert [e["path"] for e in journal(client, token, path=V2)] == [V2]
    assert [e["path"] for e in journal(client, token, path="/api/v2")] == [V2]
    assert [e["path"] for e in journal(client, token, path="/v3/")] == [V3]
    assert journal(client, token, path="/api/v2/situations") == []  # a segment prefix, not a string one
    assert len(journal(client, token)) == 2


def test_filter_after_a_row_is_a_cursor_that_cannot_tie(make_client):
    """Calls made within one clock tick share a timestamp, never an id: `after=<id>` lists
    exactly the calls made after that one."""
    client, token = make_client(), token_for()
    for name in ("premier", "deuxieme", "troisieme"):
        v2(client, token, name)
    second = journal(client, token)[1]
    assert second["query"]["identifiant"] == "deuxieme"
    assert [e["query"]["identifiant"] for e in journal(client, token, after=str(second["id"]))] == ["troisieme"]
    assert journal(client, token, after="0") == journal(client, token)
    refused = client.get("/sandbox/requests?after=hier", headers={"X-Api-Key": token})
    assert refused.status_code == 400 and "after" in refused.get_json()["reason"]


def test_filter_since(make_client):
    client, token = make_client(), token_for()
    v2(client, token, "premier")
    v2(client, token, "deuxieme")
    assert journal(client, token, since="2999-01-01T00:00:00Z") == []
    assert len(journal(client, token, since="2000-01-01")) == 2
    newest = journal(client, token)[0]
    assert newest in journal(client, token, since=newest["at"])
    # `+00:00` not percent-encoded in a URL arrives as a space: still understood.
    raw = client.get("/sandbox/requests?since=2000-01-01T00:00:00+00:00", headers={"X-Api-Key": token})
    assert len(raw.get_json()["requests"]) == 2
    encoded = client.get(f"/sandbox/requests?since={quote('2999-01-01T00:00:00+02:00')}",
                         headers={"X-Api-Key": token})
    assert encoded.get_json()["requests"] == []


def test_since_that_is_not_a_date_is_a_400(make_client):
    client, token = make_client(), token_for()
    answer = client.get("/sandbox/requests?since=hier", headers={"X-Api-Key": token})
    assert answer.status_code == 400
    assert answer.get_json()["error"] == "bad_request"


def test_delete_forgets_the_calling_token_s_calls_only(make_client):
    client = make_client()
    alice, bob = token_for(), token_for()
    v2(client, alice)
    v2(client, bob)

    assert client.delete("/sandbox/requests", headers={"X-Api-Key": alice}).status_code == 204

    assert journal(client, alice) == []
    assert len(journal(client, bob)) == 1
    v2(client, alice, "apres")
    assert [e["query"]["identifiant"] for e in journal(client, alice)] == ["apres"]


def test_the_journal_needs_a_token(make_client):
    client = make_client()
    assert client.get("/sandbox/requests").status_code == 401
    assert client.delete("/sandbox/requests").status_code == 401
    assert client.get("/sandbox/requests", headers={"X-Api-Key": "not-a-token"}).status_code == 401


@pytest.mark.slow
def test_the_journal_is_shared_by_gunicorn_workers_and_read_with_a_bearer(start_server, personas):
    server = start_server("--fixtures", str(personas), "--workers", "2")
    token = token_for()
    with requests.Session() as http:
        for i in range(12):
            http.get(server.url + V2, params={"identifiant": f"p{i}"}, headers={"X-Api-Key": token}, timeout=10)
    # fresh connections, so the read can land on either worker
    for _ in range(3):
        answer = requests.get(server.url + "/sandbox/requests", headers={"Authorization": f"Bearer {token}"},
                              timeout=10)
        assert [e["query"]["identifiant"] for e in answer.json()["requests"]] == [f"p{i}" for i in range(11, -1, -1)]


@pytest.mark.slow
def test_the_journal_is_shared_through_redis_by_two_instances(start_server, personas, redis_server):
    one = start_server("--fixtures", str(personas), "--redis", redis_server.url, "--workers", "1")
    two = start_server("--fixtures", str(personas), "--redis", redis_server.url, "--workers", "1")
    token = token_for()
    requests.get(one.url + V2, params={"identifiant": "camille.exemple"}, headers={"X-Api-Key": token}, timeout=10)

    entries = requests.get(two.url + "/sandbox/requests", headers={"X-Api-Key": token}, timeout=10).json()
    assert [e["status"] for e in entries["requests"]] == [200]
    assert requests.delete(two.url + "/sandbox/requests", headers={"X-Api-Key": token}, timeout=10).status_code == 204
    assert requests.get(one.url + "/sandbox/requests", headers={"X-Api-Key": token},
                        timeout=10).json() == {"requests": []}


def test_a_fault_and_a_near_miss_are_in_the_entry(make_client):
    client, token = make_client(), token_for()
    v2(client, token, **{"X-Sandbox-Fault": "unavailable"})
    v2(client, token, "nobody")

    near, fault = journal(client, token)
    assert fault["fault"] == "unavailable" and fault["status"] == 503 and "near_miss" not in fault
    assert near["near_miss"]["different"] == ["identifiant"] and "fault" not in near
    assert json.dumps(near)  # plain JSON all the way down
