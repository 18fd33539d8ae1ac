"""Floods against a real gunicorn server on loopback, with bounds small enough that a few
hundred calls reach them, and a second client (the victim) whose answers must not change.

Every flood is bounded in count (not in time); nothing asserts on a duration."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.conftest import RECIPIENT, token_for

# Small bounds (docs/ci.md, "Quotas"): the per-address limits are off because the flooder and
# the victim share 127.0.0.1; the per-token limits stay production's.
SMALL = {
    "SANDBOX_IP_RATE_LIMIT": "off", "SANDBOX_SANDBOX_RATE_LIMIT": "100000/second",
    "SANDBOX_JOURNAL_ROW_BYTES": "2KiB", "SANDBOX_JOURNAL_TOKEN_BYTES": "32KiB", "SANDBOX_JOURNAL_BYTES": "256KiB",
    "SANDBOX_REVOCATIONS": "1000",
    "SANDBOX_PERSONA_BYTES": "64KiB", "SANDBOX_TOKEN_PERSONAS": "5", "SANDBOX_TOKEN_PERSONA_BYTES": "160KiB",
    "SANDBOX_PERSONAS": "30", "SANDBOX_PERSONAS_BYTES": "1MiB",
}
JOURNAL_BYTES, TOKEN_BYTES, PERSONAS, PERSONAS_BYTES = 256 << 10, 32 << 10, 30, 1 << 20
V3_DEFAULT = f"/v3/france_travail/statut/identifiant?identifiant=default&recipient={RECIPIENT}"


@pytest.fixture(params=["lmdb", "redis"])
def bounded_server(request, start_server, tmp_path):
    """A 2-worker server with the small bounds, on the embedded store (its own --data-dir, so the
    test can open the LMDB file) or on a real redis-server."""
    if request.param == "redis":
        redis_url = request.getfixturevalue("redis_server").url
        server = start_server("--redis", redis_url, env=SMALL)
        server.redis_url = redis_url
    else:
        server = start_server("--data-dir", str(tmp_path / "store-data"), env=SMALL)
        server.redis_url = None
    server.store_dir = tmp_path / "store-data" / "store"
    return server


class Victim(threading.Thread):
    """Another client calling one route at its own pace (under the 20/s per-token limit) while
    the flood runs: every answer must be the one it got before the flood, status and body."""

    def __init__(self, url: str, path: str = V3_DEFAULT, least: int = 20, token: str | None = None):
        super().__init__(daemon=True)
        self.token = token or token_for()
        self.url, self.path, self.least = url + path, path, least
        self.session = requests.Session()
        self.before = self.call()
        self.answers: list = []
        self.done = threading.Event()

    def call(self):
        answer = self.session.get(self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30)
        return answer.status_code, answer.content

    def run(self):
        while not self.done.is_set() or len(self.answers) < self.least:
            self.answers.append(self.call())
            time.sleep(0.07)  # about 14 calls a second: within production's 20/s per token

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.join(120)

    def assert_unchanged(self):
        assert self.before[0] == 200
        changed = [(status, body[:200]) for status, body in self.answers if (status, body) != self.before]
        assert not changed, f"{len(changed)} of {len(self.answers)} answers changed: {changed[:3]}"
        assert len(self.answers) >= self.least


def flood(work, items, threads: int = 8) -> list:
    """`work(item)` for every item on `threads` threads: a bounded number of calls."""
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(work, items))


def usage(url: str, token: str) -> dict:
    answer = requests.get(url + "/sandbox/usage", headers={"X-Api-Key": token}, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()
