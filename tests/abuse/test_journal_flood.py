"""One client fills the journal as fast as it can (long queries, many tokens, refused calls
too): the rows are capped and marked, each token's journal and all of them together stay within
their byte bounds by dropping the oldest rows, and the other client's calls answer as before."""
from __future__ import annotations

import pytest
import requests

from tests.conftest import token_for

from .conftest import JOURNAL_BYTES, TOKEN_BYTES, Victim, flood, usage

pytestmark = pytest.mark.slow
LONG = "x" * 8000  # gunicorn's request line allows 8,190 bytes


def test_a_journal_flood_with_long_queries_stays_bounded_and_the_victim_answers_alike(bounded_server):
    url = bounded_server.url
    tokens = [token_for() for _ in range(12)]
    session = requests.Session()

    def call(i):
        token = tokens[i % len(tokens)]
        answer = session.get(f"{url}/api/v2/situations-pole-emploi?identifiant=default&padding={LONG}{i}",
                             headers={"X-Api-Key": token}, timeout=60)
        return answer.status_code

    with Victim(url) as victim:
        statuses = flood(call, range(600))
    victim.assert_unchanged()
    # the flood's own calls: answered (200: production does not read `padding`, the case is found)
    # or over the per-token limit, never refused for the store's capacity
    assert set(statuses) <= {200, 429} and 200 in statuses, sorted(set(statuses))

    seen = usage(url, tokens[-1])
    assert seen["instance"]["journal_bytes"] <= JOURNAL_BYTES == seen["instance"]["limits"]["journal_bytes"]
    assert 0 < seen["journal"]["bytes"] <= TOKEN_BYTES == seen["journal"]["limits"]["bytes"]
    rows = requests.get(url + "/sandbox/requests", headers={"X-Api-Key": tokens[-1]}, timeout=30).json()["requests"]
    assert rows and len(rows) == seen["journal"]["rows"]
    assert all(row["truncated"] is True and row["query"]["padding"].endswith("…[truncated]")
               and len(row["query"]["padding"]) < 1000 for row in rows)
    assert rows[0]["query"]["identifiant"] == "default"  # the short values are kept whole

    # the oldest rows went first: the first tokens' journals are gone or hold only late calls
    ids = [row["id"] for token in tokens for row in
           requests.get(url + "/sandbox/requests", headers={"X-Api-Key": token}, timeout=30).json()["requests"]]
    held = sum(usage(url, token)["journal"]["bytes"] for token in tokens)
    assert held <= JOURNAL_BYTES and min(ids) > 600 // 4

    # after the flood, a new call is journaled and read back as usual
    assert victim.call() == victim.before
    mine = requests.get(url + "/sandbox/requests", headers={"X-Api-Key": victim.token}, timeout=30).json()["requests"]
    assert mine[0]["status"] == 200 and "truncated" not in mine[0]
