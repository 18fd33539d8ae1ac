"""The embedded store's moving parts: counters shared by forked workers, the journal written
in batches by each worker's writer thread, whole and in call order, visible from any worker as
soon as a call is answered, across restarts."""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
import sqlite3
import struct
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from sandbox.store import SqliteStore, StoreUnavailable
from sandbox.store.shared import SharedState

from .conftest import token_for

T0 = 1_800_000_000.0
V2 = "/api/v2/situations-pole-emploi"


def _store(tmp_path, **kw) -> SqliteStore:
    store = SqliteStore(tmp_path / "store.sqlite3", kw.pop("journal_size", 1000))
    store.clock = lambda: T0
    return store


def _count_in_child(store, queue, start, calls):
    start.wait(30)  # all together, so that the processes really contend
    queue.put([store.admit(None, [("t:shared", 3600)])[1][0].count for _ in range(calls)])


def test_counts_are_exact_across_forked_processes(tmp_path):
    """Workers forked from one master (gunicorn's preload) count in one place: no lost
    increment, no count given twice, though each process holds the file's lock on its own."""
    store = _store(tmp_path)
    store.admit(None, [("t:shared", 3600)])  # the parent counted before the fork, as a master may
    context = multiprocessing.get_context("fork")
    queue, start = context.Queue(), context.Barrier(4)
    children = [context.Process(target=_count_in_child, args=(store, queue, start, 2000)) for _ in range(4)]
    for child in children:
        child.start()
    counts = sorted(c for _ in children for c in queue.get(timeout=120))
    for child in children:
        child.join(30)
    assert counts == list(range(2, 8002))


def _hold_the_counter_lock(path, held, release):
    import fcntl
    with open(path, "rb") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        held.set()
        release.wait(30)
        fcntl.flock(file, fcntl.LOCK_UN)


def test_a_count_waits_out_another_process_s_lock_however_long_it_is_held(tmp_path):
    """A count that finds the file lock taken by another process waits for it (first yielding
    the CPU with the GIL kept, for the usual few microseconds, then sleeping, so that a long
    hold burns no CPU), then counts exactly once."""
    store = _store(tmp_path)
    store.admit(None, [("t:wait", 3600)])
    context = multiprocessing.get_context("spawn")
    held, release = context.Event(), context.Event()
    holder = context.Process(target=_hold_the_counter_lock,
                             args=(str(tmp_path / "store.counters"), held, release))
    holder.start()
    try:
        assert held.wait(30)
        with ThreadPoolExecutor(5) as pool:
            counting = [pool.submit(store.admit, None, [("t:wait", 3600)]) for _ in range(4)]
            other = pool.submit(sum, range(1000))  # the process is not frozen meanwhile
            assert other.result(5) == sum(range(1000))
            cpu = time.process_time()
            time.sleep(0.5)
            cpu = time.process_time() - cpu
            assert not any(f.done() for f in counting), "counted while another process held the lock"
            assert cpu < 0.15, f"four waiting counts used {cpu:.2f} s of CPU in 0.5 s"
            release.set()
            counts = sorted(f.result(10)[1][0].count for f in counting)
        assert counts == [2, 3, 4, 5]
    finally:
        release.set()
        holder.join(10)


def _entry(i):
    return {"method": "GET", "path": V2, "query": {"i": str(i)}, "status": 200, "at": "x", "case": None}


def _settle(store, owner, i):
    return store.settle(owner, [(f"t:{owner}", 1)], owner, lambda revoked, hits: _entry(i))


def test_calls_of_many_threads_are_journaled_whole_and_in_order(tmp_path):
    """Threads that write together share transactions (group commit): each owner still gets
    every one of its rows, in its own call order."""
    store = _store(tmp_path)
    owners = [f"owner-{k}" for k in range(8)]

    def calls(owner):
        for i in range(60):
            _settle(store, owner, i)
    with ThreadPoolExecutor(len(owners)) as pool:
        list(pool.map(calls, owners))
    for owner in owners:
        assert [int(e["query"]["i"]) for e in store.journal(owner)] == list(range(59, -1, -1))


def test_a_store_that_cannot_write_answers_503_then_recovers(tmp_path, caplog):
    """Another process holds the file (a stuck mount, a long transaction): once the journal
    writer has failed, calls are answered 503 instead of going unrecorded; every call that was
    answered is journaled once the file is writable again, none twice."""
    store = _store(tmp_path)
    store.BUSY_TIMEOUT = 0.2
    _settle(store, "bob", 0)
    blocker = sqlite3.connect(tmp_path / "store.sqlite3", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    answered, refused = [0], 0
    with caplog.at_level(logging.WARNING, logger="sandbox.store"):
        for i in range(1, 200):
            try:
                _settle(store, "bob", i)
            except StoreUnavailable:
                refused += 1
                if refused == 3:
                    break
            else:
                answered.append(i)
            time.sleep(0.01)
    assert refused == 3, "calls kept being answered while nothing could be journaled"
    assert "unreachable" in caplog.text
    blocker.execute("ROLLBACK")
    blocker.close()
    deadline = time.monotonic() + 10
    while True:
        try:
            _settle(store, "bob", 1000)
            break
        except StoreUnavailable:
            assert time.monotonic() < deadline, "the store did not recover"
            time.sleep(0.05)
    answered.append(1000)
    assert [int(e["query"]["i"]) for e in store.journal("bob")] == answered[::-1]


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
    # both workers journaled calls: each opened its connection to the store file
    assert len(_workers_with_open(server, tmp_path / "data" / "store.sqlite3")) == 2


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
    with sqlite3.connect(tmp_path / "data" / "store.sqlite3") as db:
        ids = [row[0] for row in db.execute("SELECT id FROM journal ORDER BY id")]
    assert len(ids) == len(set(ids)) == 31
    assert json.loads(json.dumps(listed))  # plain JSON
    assert (tmp_path / "data" / "store.counters").exists()


class _SmallState(SharedState):
    SLOTS = 1 << 8
    TABLE_BYTES = SLOTS * SharedState.SLOT.size
    SIZE = SharedState.TABLES + SharedState.PERIODS * 2 * TABLE_BYTES
    LAYOUT = struct.pack("<II", SLOTS, SharedState.PERIODS)
    _ZEROS = bytes(TABLE_BYTES)


def test_counter_tables_hold_one_window_so_they_never_fill_up(tmp_path):
    """A table counts one window and is wiped when the window after next begins: a sandbox that
    runs for hours with ever new tokens keeps exact counts in a fixed table, with keys of
    different periods side by side."""
    state = _SmallState(tmp_path / "c")
    for window in range(60):  # 60 windows x 100 new tokens: 6,000 keys through a 256-slot table
        now = 1_800_000_000 + window + 0.5
        for token in range(100):
            key = f"t:{window}-{token}"
            assert state.count([(key, 1), ("ip:127.0.0.1", 60)], now)[0] == 1
            assert state.count([(key, 1)], now) == [2]
    minute = int((1_800_000_000 + 0.5) // 60)
    assert state.count([("ip:127.0.0.1", 60)], 1_800_000_059.9) == [
        100 * sum(1 for w in range(60) if int((1_800_000_000 + w + 0.5) // 60) == minute) + 1]


def test_a_call_counted_after_its_window_is_over_is_counted_alone(tmp_path):
    state = _SmallState(tmp_path / "c")
    assert state.count([("t:a", 1)], 1_800_000_010.5) == [1]
    assert state.count([("t:a", 1)], 1_800_000_010.6) == [2]
    assert state.count([("t:a", 1)], 1_800_000_012.0) == [1]  # two windows on: the table was wiped
    assert state.count([("t:a", 1)], 1_800_000_010.9) == [1]  # a straggler of window 10: not stored
    assert state.count([("t:a", 1)], 1_800_000_012.1) == [2]


def test_a_window_with_more_callers_than_the_table_holds_is_unavailable_not_unlimited(tmp_path):
    state = _SmallState(tmp_path / "c")
    try:
        for token in range(_SmallState.SLOTS + 1):
            state.count([(f"t:{token}", 1)], 1_800_000_000.5)
    except StoreUnavailable as exc:
        assert "table is full" in str(exc)
    else:
        raise AssertionError("more keys than slots were counted")


def test_two_stores_on_one_data_folder_each_wait_for_the_other_s_rows(tmp_path):
    """Each store (a worker, or an app rebuilt in one process) publishes its own writer progress:
    a read through one waits for the rows the other has queued, and lists every call in the
    order the calls were made, whichever writer wrote its row first."""
    first, second = _store(tmp_path), _store(tmp_path)
    for i in range(200):
        _settle(first if i % 2 else second, "bob", i)
    assert [int(e["query"]["i"]) for e in first.journal("bob")] == list(range(199, -1, -1))
    indexes = {index for index, _, _ in first._shared.writers()}
    assert len(indexes) == 2
