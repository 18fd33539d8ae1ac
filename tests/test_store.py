"""The embedded store: counts exact across forked workers, the journal whole and in call order,
visible from any worker as soon as a call is answered, bounded, kept across restarts; a store
that cannot write answers 503 and comes back."""
from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from sandbox.store import Call, PersonasMoved, StoreUnavailable
from sandbox.store.lmdb_store import LmdbStore

from .conftest import token_for

pytestmark = pytest.mark.slow
T0 = 1_800_000_000.0
V2 = "/api/v2/situations-pole-emploi"


def _store(tmp_path, **kw) -> LmdbStore:
    return LmdbStore(tmp_path / "store", kw.pop("journal_size", 1000), clock=kw.pop("clock", lambda: T0))


def _count(store, key="t:shared", period=3600, amount=10**9) -> int:
    return store.count(Call(None, [(key, period)], [amount]))[1][0].count


def _count_in_child(store, queue, start, calls):
    start.wait(30)  # all together, so that the processes really contend
    queue.put([_count(store) for _ in range(calls)])


def test_counts_are_exact_across_forked_processes(tmp_path):
    """Workers forked from one master (gunicorn's preload) count in one place: no lost
    increment, no count given twice."""
    store = _store(tmp_path)
    _count(store)  # the parent counted before the fork, as a master may
    context = multiprocessing.get_context("fork")
    queue, start = context.Queue(), context.Barrier(4)
    children = [context.Process(target=_count_in_child, args=(store, queue, start, 2000)) for _ in range(4)]
    for child in children:
        child.start()
    counts = sorted(c for _ in children for c in queue.get(timeout=120))
    for child in children:
        child.join(30)
    assert counts == list(range(2, 8002))


def _entry(i):
    return {"method": "GET", "path": V2, "query": {"i": str(i)}, "status": 200, "at": "x", "case": None}


def _journal_call(store, owner, i, amount=10**9):
    return store.count(Call(owner, [(f"t:{owner}", 1)], [amount], owner, _entry(i)))


def test_calls_of_many_threads_are_journaled_whole_and_in_order(tmp_path):
    store = _store(tmp_path)
    owners = [f"owner-{k}" for k in range(8)]

    def calls(owner):
        for i in range(60):
            _journal_call(store, owner, i)
    with ThreadPoolExecutor(len(owners)) as pool:
        list(pool.map(calls, owners))
    for owner in owners:
        rows = store.journal(owner)
        assert [int(e["query"]["i"]) for e in rows] == list(range(59, -1, -1))
        assert [e["id"] for e in rows] == sorted((e["id"] for e in rows), reverse=True)


def test_a_refused_call_is_journaled_with_the_status_it_got(tmp_path):
    store = _store(tmp_path)
    _journal_call(store, "bob", 0, amount=1)
    _journal_call(store, "bob", 1, amount=1)  # second in the same second: over the limit
    store.revoke("bob")
    _journal_call(store, "bob", 2)
    assert [(e["query"]["i"], e["status"]) for e in store.journal("bob")] == [("2", 401), ("1", 429), ("0", 200)]


def test_the_journal_keeps_each_owner_s_newest_rows_only(tmp_path):
    store = _store(tmp_path, journal_size=5)
    for i in range(12):
        _journal_call(store, "a", i)
        _journal_call(store, "b", 100 + i)
    assert [e["query"]["i"] for e in store.journal("a")] == ["11", "10", "9", "8", "7"]
    assert [e["query"]["i"] for e in store.journal("b")] == ["111", "110", "109", "108", "107"]
    store.forget("a")
    assert store.journal("a") == [] and len(store.journal("b")) == 5


def test_a_store_that_cannot_write_answers_unavailable_and_keeps_its_rows(tmp_path, monkeypatch, caplog):
    """A full store (here: a tiny size ceiling) refuses the call rather than answering it
    unrecorded, and says so once; restarted with room, it serves again with every row kept."""
    from sandbox.store import lmdb_store
    monkeypatch.setattr(LmdbStore, "MAP_SIZE", 256 * 1024)
    store = _store(tmp_path, journal_size=10**9)
    big = {"method": "GET", "path": V2, "query": {"x": "y" * 2000}, "status": 200, "at": "x", "case": None}
    written = 0
    with caplog.at_level(logging.WARNING, logger="sandbox.store"):
        with pytest.raises(StoreUnavailable):
            for _ in range(1000):
                store.count(Call("bob", [], [], "bob", big))
                written += 1
        with pytest.raises(StoreUnavailable):
            store.count(Call("bob", [], [], "bob", big))
    assert caplog.text.count("unreachable") == 1
    lmdb_store._close_before_fork()  # as a restart does
    monkeypatch.setattr(LmdbStore, "MAP_SIZE", 4 << 20)
    again = _store(tmp_path, journal_size=10**9)
    _journal_call(again, "carol", 1)
    assert len(again.journal("bob")) == written > 0
    assert [e["query"]["i"] for e in again.journal("carol")] == ["1"]


def test_counters_of_past_windows_are_dropped_so_the_store_stays_small(tmp_path):
    """A sandbox that runs for hours with ever new tokens keeps exact counts, and holds the
    callers of the current windows only."""
    moment = [T0]
    store = _store(tmp_path, clock=lambda: moment[0])
    for window in range(60):
        moment[0] = T0 + window + 0.5
        for token in range(100):
            call = Call(None, [(f"t:{window}-{token}", 1), ("ip:127.0.0.1", 60)], [10**9, 10**9])
            assert store.count(call)[1][0].count == 1
            assert store.count(call)[1][0].count == 2
    with store._env.begin() as txn:
        held = txn.stat(store._counters)["entries"]
    assert held <= 100 + 2  # this second's 100 tokens, and the address in at most two minutes
    minute = int(T0 // 60)
    expected = 200 * sum(1 for w in range(60) if int((T0 + w + 0.5) // 60) == int((T0 + 59.5) // 60))
    assert _count(store, "ip:127.0.0.1", 60) == expected + 1
    assert minute  # the window arithmetic above used real minutes


def assert_outdated_personas_count_nothing(store):
    """A call answered from an index of the personas that another worker has since changed is
    neither counted nor journaled: the store names the version to rebuild at, and the call
    answered again at that version counts once. Only a persona the caller sees moves it: its
    own or a global one, never another token's own."""
    known = store.personas_version()
    store.put_persona("p0", '{"id": "p0"}', None, "alice")  # alice's own: bob's answer is unchanged
    assert store.count(Call("bob", [("t:bob0", 3600)], [10], "bob", _entry(-1), personas_version=known))
    store.forget("bob")
    store.put_persona("p1", '{"id": "p1"}', None, "bob")  # another worker creates bob's persona meanwhile
    call = Call("bob", [("t:bob", 3600)], [10], "bob", _entry(0), personas_version=known)
    with pytest.raises(PersonasMoved) as moved:
        store.count(call)
    assert moved.value.version == store.personas_version() != known
    assert store.journal("bob") == []
    call = Call("bob", [("t:bob", 3600)], [10], "bob", _entry(1), personas_version=moved.value.version)
    assert store.count(call)[1][0].count == 1
    assert [e["query"]["i"] for e in store.journal("bob")] == ["1"]
    assert _count(store, "t:bob") == 2  # a call that looked up no persona is never refused so
    seen = store.personas_version()
    store.put_persona("p2", '{"id": "p2"}', None, "alice", shared=True)  # a global one: everyone's
    with pytest.raises(PersonasMoved) as moved:
        store.count(Call("carol", [], [], "carol", _entry(0), personas_version=seen))
    assert moved.value.version == store.personas_version() > seen


def test_a_call_answered_from_outdated_personas_counts_nothing(tmp_path):
    assert_outdated_personas_count_nothing(_store(tmp_path))


def test_two_stores_on_one_folder_share_one_journal_in_call_order(tmp_path):
    """Two processes (two workers, two instances naming one --data-dir) see one journal."""
    first, second = _store(tmp_path), _store(tmp_path)
    for i in range(200):
        _journal_call(first if i % 2 else second, "bob", i)
    assert [int(e["query"]["i"]) for e in first.journal("bob")] == list(range(199, -1, -1))
    first.revoke("jti-1")
    assert second.is_revoked("jti-1")


def test_two_gunicorn_workers_each_calls_visible_at_once_in_order(start_server, tmp_path):
    """Fresh connections land on either worker; each call is in the journal as soon as it is
    answered, whichever worker reads, and the journal lists the calls newest first."""
    server = start_server("--workers", "2", "--rate-limit", "off")
    token = token_for()
    for i in range(24):
        answer = requests.get(server.url + V2, params={"identifiant": f"p{i}"}, headers={"X-Api-Key": token},
                              timeout=10)
        assert answer.status_code == 404
        listed = requests.get(server.url + "/sandbox/requests", headers={"X-Api-Key": token}, timeout=10)
        assert [e["query"]["identifiant"] for e in listed.json()["requests"]] == [f"p{j}" for j in range(i, -1, -1)]
    assert len(_workers_with_open(server, tmp_path / "data" / "store" / "data.mdb")) == 2


def _workers_with_open(server, path) -> list[int]:
    children = open(f"/proc/{server.process.pid}/task/{server.process.pid}/children").read().split()
    holding = []
    for pid in children:
        targets = set()
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                targets.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
            except OSError:
                pass
        if str(path) in targets:
            holding.append(int(pid))
    return holding


def test_the_journal_survives_a_graceful_restart(start_server, tmp_path):
    token = token_for()
    server = start_server("--workers", "2", "--rate-limit", "off")
    for i in range(30):
        requests.get(server.url + V2, params={"identifiant": f"r{i}"}, headers={"X-Api-Key": token}, timeout=10)
    assert server.stop() == 0
    again = start_server("--workers", "2", "--rate-limit", "off")
    requests.get(again.url + V2, params={"identifiant": "after"}, headers={"X-Api-Key": token}, timeout=10)
    listed = requests.get(again.url + "/sandbox/requests", headers={"X-Api-Key": token}, timeout=10).json()
    assert [e["query"]["identifiant"] for e in listed["requests"]] == ["after"] + [f"r{i}" for i in range(29, -1, -1)]
    ids = [e["id"] for e in listed["requests"]]
    assert ids == sorted(set(ids), reverse=True)


def test_a_journal_row_is_the_call_as_answered_with_its_id_first_and_cut_past_its_bound(tmp_path):
    """The row is serialised before the write transaction; what a reader gets is unchanged:
    the id, then the entry as answered; a refused call's row says 429; a row past its bound is
    cut and says so."""
    store = _store(tmp_path)
    _journal_call(store, "dora", 1)
    store.count(Call("dora", [("t:dora", 1)], [1], "dora", _entry(2)))  # over a limit of 1: refused
    long = {**_entry(3), "query": {"q": "é" * 5000}}
    store.count(Call("dora", [("t:other", 1)], [10**9], "dora", long))
    cut, refused, first = store.journal("dora")
    assert list(first) == ["id", "method", "path", "query", "status", "at", "case"]
    assert first == {"id": first["id"], **_entry(1)}
    assert refused["status"] == 429 and refused["id"] == first["id"] + 1 and refused["query"] == {"i": "2"}
    assert cut["truncated"] is True and cut["id"] == refused["id"] + 1 and cut["status"] == 200
    assert cut["query"]["q"].endswith("…[truncated]") and len(cut["query"]["q"]) < 5000
