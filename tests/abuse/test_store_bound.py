"""The store AT its bound: written many times over, it keeps serving every caller, holds no more
than its bounds (the oldest rows dropped first, revocations and personas within theirs), and the
LMDB map it was sized for never fills."""
from __future__ import annotations

import lmdb
import pytest
import requests

from sandbox.store import Bounds, Call, QuotaExceeded
from sandbox.store.lmdb_store import LmdbStore
from tests.conftest import token_for

from .conftest import JOURNAL_BYTES, Victim, flood, usage

T0 = 1_800_000_000.0
SMALL = Bounds(journal_rows=1000, row_bytes=2048, token_bytes=32 << 10, journal_bytes=256 << 10, revocations=200,
               persona_bytes=64 << 10, token_personas=50, token_persona_bytes=1 << 20, personas=40,
               personas_bytes=512 << 10)


def _entry(owner, i, size):
    return {"method": "GET", "path": "/api/v2/x", "query": {"n": str(i), "padding": "p" * size},
            "status": 200, "at": "x", "case": None}


def _used(store) -> int:
    """Bytes of the map in use: the highest page ever written (LMDB reuses freed pages below it)."""
    info = store._env.info()
    return (info["last_pgno"] + 1) * store._env.stat()["psize"]


def test_the_embedded_store_at_its_bound_drops_the_oldest_rows_and_never_fills(tmp_path):
    store = LmdbStore(tmp_path / "store", SMALL, clock=lambda: T0)
    owners = [f"owner-{k:02}" for k in range(40)]
    sizes = (50, 900, 3000, 8000)  # short rows, and rows cut to the row bound
    plateau = None
    for rounds in range(2):  # about 20 times the bound each round
        for owner in owners:
            for i in range(60):
                store.count(Call(None, [], [], owner, _entry(owner, i, sizes[i % 4]), expires_at=T0 + 3600))
        held = {owner: store.usage(owner) for owner in owners}
        total = held[owners[-1]]["all_journal_bytes"]
        assert total <= SMALL.journal_bytes
        assert total == sum(u["journal_bytes"] for u in held.values())  # the accounts agree
        assert all(u["journal_bytes"] <= SMALL.token_bytes for u in held.values())
        assert held[owners[0]]["journal_rows"] == 0 and store.journal(owners[0]) == []  # the oldest went
        newest = store.journal(owners[-1])
        assert [row["query"]["n"] for row in newest[:3]] == ["59", "58", "57"] and len(newest) == held[owners[-1]]["journal_rows"]
        assert all(len(repr(row)) < SMALL.row_bytes * 1.2 for row in newest)
        plateau = plateau or _used(store)
    # twice the writes, the same room: freed pages are reused, and far below the map
    assert _used(store) <= 2 * plateau and _used(store) <= store.map_size // 2

    for k in range(1000):
        store.revoke(f"jti-{k}", T0 + 60 + k)
    assert store.usage("x")["revocations"] == SMALL.revocations
    assert store.is_revoked("jti-999") and not store.is_revoked("jti-0")  # the soonest to expire went first

    created, refused = 0, None
    for k in range(200):
        try:
            store.put_persona(f"p{k}", "{}" + " " * 30_000, T0 + 600, f"token-{k}")
            created += 1
        except QuotaExceeded as exc:
            refused = exc
            break
    assert refused is not None and refused.quota == "personas_bytes" and created == (512 << 10) // 30_002
    assert _used(store) <= store.map_size // 2


@pytest.mark.slow
def test_a_store_at_its_bound_keeps_serving_and_drops_the_oldest_rows(bounded_server):
    url = bounded_server.url
    first = token_for()
    session = requests.Session()
    for i in range(15):  # the oldest rows of the store
        assert session.get(f"{url}/api/v2/situations-pole-emploi?identifiant=default&n={i}",
                           headers={"X-Api-Key": first}, timeout=30).status_code == 200  # `n` unread
    assert usage(url, first)["journal"]["rows"] == 15
    tokens = [token_for() for _ in range(20)]

    def call(i):
        answer = session.get(f"{url}/api/v2/situations-pole-emploi?identifiant=default&padding={'z' * 3000}{i}",
                             headers={"X-Api-Key": tokens[i % len(tokens)]}, timeout=60)
        return answer.status_code

    with Victim(url) as victim:
        statuses = flood(call, range(500))  # about 4 times the journals' bound
    victim.assert_unchanged()
    assert set(statuses) <= {200, 429}, sorted(set(statuses))  # the padding is unread, as in production

    seen = usage(url, first)
    assert seen["journal"]["rows"] == 0  # its rows were the oldest: dropped first
    assert requests.get(url + "/sandbox/requests", headers={"X-Api-Key": first}, timeout=30).json()["requests"] == []
    assert 0 < seen["instance"]["journal_bytes"] <= JOURNAL_BYTES
    last = usage(url, tokens[(500 - 1) % len(tokens)])["journal"]
    assert last["rows"] > 0
    if bounded_server.redis_url is None:
        env = lmdb.open(str(bounded_server.store_dir), readonly=True, lock=False, max_dbs=16)
        try:
            used = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
        finally:
            env.close()
        # writemap: the file is as large as the map the server opened (Bounds.map_size)
        assert used <= (bounded_server.store_dir / "data.mdb").stat().st_size // 2


def test_journals_revocations_and_personas_expire_with_their_token(tmp_path):
    """Nothing a token leaves outlives it: once its `exp` has passed, the next writes remove its
    journal, its revocation and its own personas, and the room is counted free again."""
    now = [T0]
    store = LmdbStore(tmp_path / "store", SMALL, clock=lambda: now[0])
    for i in range(40):
        store.count(Call(None, [], [], "short", _entry("short", i, 500), expires_at=T0 + 60))
    store.count(Call(None, [], [], "long", _entry("long", 0, 10), expires_at=T0 + 3600))
    store.revoke("short-jti", T0 + 60)
    store.put_persona("mine", "{}", T0 + 60, "short", token_expires_at=T0 + 60)
    before = store.usage("short")
    assert before["journal_rows"] == 40 and before["personas"] == 1 and store.is_revoked("short-jti")

    now[0] = T0 + 61
    for i in range(3):  # a few calls of anyone: each removes a few expired rows, never a whole table
        store.count(Call(None, [], [], "long", _entry("long", i + 1, 10), expires_at=T0 + 3600))
    store.put_persona("other", "{}", T0 + 600, "long")
    after = store.usage("short")
    assert after["journal_rows"] == 0 and after["journal_bytes"] == 0 and after["personas"] == 0
    assert after["revocations"] == 0 and not store.is_revoked("short-jti")
    assert after["all_journal_bytes"] == store.usage("long")["journal_bytes"]
    assert store.persona_changes(0)[1] == {"mine": None, "other": "{}"}


@pytest.mark.slow
def test_on_redis_journals_and_revocations_expire_with_their_token(redis_server):
    import time

    import redis

    from sandbox.store.redis_store import RedisStore
    store = RedisStore(redis_server.url, SMALL)
    direct = redis.Redis.from_url(redis_server.url)
    expires = time.time() + 600
    store.count(Call(None, [], [], "short", _entry("short", 0, 10), expires_at=expires))
    for key in ("sandbox:journal:short", "sandbox:journal:short:bytes"):
        assert 0 < direct.ttl(key) <= 601
    store.revoke("short-jti", expires)
    assert store.is_revoked("short-jti")
    assert direct.zscore("sandbox:revocations", "short-jti") == int(expires) + 1
    store.revoke("gone-jti", time.time() - 1)  # a token already expired: its revocation goes at once
    store.count(Call(None, [], [], "short", _entry("short", 1, 10), expires_at=expires))
    assert direct.zscore("sandbox:revocations", "gone-jti") is None
    store.put_persona("mine", "{}", expires, "short", token_expires_at=expires)
    assert 0 < direct.ttl("sandbox:personas:v:short") <= 601
