"""GET /sandbox/usage: a token sees its own journal and personas against its quotas; a persona
refused by a quota says which one, in the /sandbox error format."""
from __future__ import annotations

import json

from tests.conftest import token_for

V3_CASE = "api_particulier_v3_france_travail_statut_with_identifiant/200_default.yaml"
V2 = "/api/v2/situations-pole-emploi?identifiant=default"


def persona(identifiant, description=""):
    body = {"like": V3_CASE, "params": {"identifiant": identifiant}, "payload": {"data": {"identifiant": identifiant}}}
    if description:
        body["description"] = description
    return body


def post(client, token, body):
    return client.post("/sandbox/personas", data=json.dumps(body), headers={"X-Api-Key": token},
                       content_type="application/json")


def test_usage_shows_the_token_its_own_journal_and_personas_against_the_limits(make_app):
    client = make_app(ip_rate_limit="off", token_personas=2, journal_row_bytes=512).test_client()
    mine, other = token_for(), token_for()
    assert client.get("/sandbox/usage").status_code == 401
    for i in range(3):
        client.get(V2 + f"&n={i}", headers={"X-Api-Key": mine})
    client.get(V2 + "&long=" + "y" * 3000, headers={"X-Api-Key": mine})
    client.get(V2, headers={"X-Api-Key": other})
    assert post(client, mine, persona("usage.one")).status_code == 201

    seen = client.get("/sandbox/usage", headers={"X-Api-Key": mine}).get_json()
    assert seen["journal"]["rows"] == 4 and 0 < seen["journal"]["bytes"] <= seen["journal"]["limits"]["bytes"]
    assert seen["journal"]["limits"] == {"rows": 1000, "bytes": 1 << 20, "row_bytes": 512}
    assert seen["personas"]["count"] == 1 and seen["personas"]["bytes"] > 0
    assert seen["personas"]["limits"]["count"] == 2 and seen["personas"]["limits"]["ttl"] == 7 * 86400
    assert seen["instance"]["personas"] == 1 and seen["instance"]["journal_bytes"] > seen["journal"]["bytes"]
    assert seen["token"]["expires_at"].endswith("Z")
    long_row = client.get("/sandbox/requests", headers={"X-Api-Key": mine}).get_json()["requests"][0]
    assert long_row["truncated"] is True and long_row["query"]["long"].endswith("…[truncated]")
    assert len(json.dumps(long_row).encode()) <= 512

    assert client.get("/sandbox/usage", headers={"X-Api-Key": other}).get_json()["personas"]["count"] == 0


def test_a_persona_over_a_quota_is_refused_naming_it(make_app):
    client = make_app(ip_rate_limit="off", token_personas=2, persona_bytes=8192, persona_ttl=600).test_client()
    mine = token_for()
    assert post(client, mine, persona("q.one")).status_code == 201
    assert post(client, mine, persona("q.two")).status_code == 201
    third = post(client, mine, persona("q.three"))
    assert third.status_code == 429
    body = third.get_json()
    assert body["error"] == "quota_exceeded" and body["reason"].startswith("Quota token_personas atteint : 2 ")
    assert "SANDBOX_TOKEN_PERSONAS" in body["reason"] and body["message"] == body["reason"]

    too_big = post(client, token_for(), persona("q.big", "d" * 9000))
    assert too_big.status_code == 413 and "SANDBOX_PERSONA_BYTES" in too_big.get_json()["reason"]
    stored_too_big = post(client, token_for(), persona("q.big", "d" * 7000))  # the body fits, the persona not
    assert stored_too_big.status_code == 413 and "Quota persona_bytes" in stored_too_big.get_json()["reason"]

    long_lived = post(client, token_for(), {**persona("q.ttl"), "ttl": 601})
    assert long_lived.status_code == 422 and "SANDBOX_PERSONA_TTL" in long_lived.get_json()["reason"]
    # deleting one frees its place in the quota
    first = client.get("/sandbox/personas", headers={"X-Api-Key": mine}).get_json()["operations"]
    ids = [case["id"] for op in first for case in op["cases"] if case.get("runtime")]
    assert client.delete(f"/sandbox/personas/{ids[0]}", headers={"X-Api-Key": mine}).status_code == 204
    assert post(client, mine, persona("q.three")).status_code == 201


def test_the_persona_index_follows_changes_without_re_reading_every_persona(make_app):
    """Each change reaches a worker's index as that persona alone (the store's change log): a
    flood of personas costs a worker what changed, never a re-read of all of them per change."""
    app = make_app(ip_rate_limit="off")
    client, store = app.test_client(), app.extensions["sandbox"].store
    mine = token_for()
    assert post(client, mine, persona("index.first")).status_code == 201  # the first build reads them all
    full_reads = []
    read_all = store.personas
    store.personas = lambda: full_reads.append(1) or read_all()
    created = [post(client, mine, persona(f"index.{i}")).get_json()["id"] for i in range(5)]
    assert client.delete(f"/sandbox/personas/{created[0]}", headers={"X-Api-Key": mine}).status_code == 204

    def served(identifiant):
        answer = client.get(f"/v3/france_travail/statut/identifiant?identifiant={identifiant}&recipient=13002526500013",
                            headers={"Authorization": f"Bearer {mine}"})
        return answer.status_code, answer.headers.get("X-Sandbox-Case")
    assert served("index.0") == (404, "api_particulier_v3_france_travail_statut_with_identifiant/404.yaml")
    assert served("index.4") == (200, f"runtime/{created[4]}")
    assert full_reads == []
