"""One client creates personas as fast as it can, large ones and many, from many tokens: each
token's and everyone's count and size quotas refuse the excess with 429 naming the quota (413 for
one persona too large), nothing answers 503, and the other client's calls answer as before, its
own persona included."""
from __future__ import annotations

import pytest
import requests

from tests.conftest import token_for

from .conftest import PERSONAS, PERSONAS_BYTES, Victim, flood, usage

pytestmark = pytest.mark.slow
V3_CASE = "api_particulier_v3_france_travail_statut_with_identifiant/200_default.yaml"
QUOTAS = {"token_personas", "token_persona_bytes", "personas", "personas_bytes"}


def persona(identifiant: str, description_bytes: int = 0) -> dict:
    body = {"like": V3_CASE, "params": {"identifiant": identifiant},
            "payload": {"data": {"identifiant": identifiant}}}
    if description_bytes:
        body["description"] = "d" * description_bytes
    return body


def post(url, token, body):
    return requests.post(url + "/sandbox/personas", json=body, headers={"X-Api-Key": token}, timeout=60)


def test_a_persona_flood_meets_the_quotas_and_the_victim_answers_alike(bounded_server):
    url = bounded_server.url
    victim_token = token_for()
    mine = post(url, victim_token, persona("victime.persona"))
    assert mine.status_code == 201, mine.text
    tokens = [token_for() for _ in range(10)]

    def create(i):
        token = tokens[i % len(tokens)]
        size = (60_000, 20_000, 10, 200_000)[i % 4]  # large, middling, tiny, over the body limit
        answer = post(url, token, persona(f"flood.{i}", size))
        return answer.status_code, answer.json()

    own_path = "/v3/france_travail/statut/identifiant?identifiant=victime.persona&recipient=13002526500013"
    with Victim(url) as victim, Victim(url, own_path, token=victim_token) as own:
        answers = flood(create, range(120))
    victim.assert_unchanged()
    own.assert_unchanged()  # the victim's own persona kept answering through the flood

    statuses = [status for status, _ in answers]
    assert set(statuses) <= {201, 413, 429} and {201, 413, 429} <= set(statuses), sorted(set(statuses))
    for status, body in answers:
        if status == 429:
            assert body["error"] == "quota_exceeded" and any(f"Quota {q} atteint" in body["reason"] for q in QUOTAS)
        if status == 413:
            assert body["reason"].startswith("Le corps de la requête dépasse") or "persona_bytes" in body["reason"]
    # each token within its own count, everyone within the global count and size
    for token in tokens:
        held = usage(url, token)["personas"]
        assert held["count"] <= held["limits"]["count"] and held["bytes"] <= held["limits"]["bytes"]
    instance = usage(url, victim_token)["instance"]
    assert instance["personas"] <= PERSONAS and instance["persona_bytes"] <= PERSONAS_BYTES
    assert sum(status == 201 for status in statuses) + 1 == instance["personas"]

    # the global quota is reached: a new persona is refused, saying which quota and what to do
    refused = post(url, token_for(), persona("one.more", 60_000))
    assert refused.status_code == 429 and refused.json()["error"] == "quota_exceeded"
    assert "Quota personas" in refused.json()["reason"] and "GET /sandbox/usage" in refused.json()["reason"]
    # deleting one's own makes room again
    gone = requests.delete(f"{url}/sandbox/personas/{mine.json()['id']}", headers={"X-Api-Key": victim_token},
                           timeout=30)
    assert gone.status_code == 204
    assert post(url, victim_token, persona("victime.again")).status_code == 201
