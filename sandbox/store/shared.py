"""The embedded store's memory shared by every process on one data folder: a memory-mapped
file beside the SQLite file holding the rate-limit counters, the revocation generation and
each journal writer's progress. Counting there costs a few microseconds, where a SQLite
upsert costs tens.

One lock guards it: a thread lock within the process, then flock(2) on the file between
processes (the kernel hands it over at once, and frees it if its holder dies). Nothing but
memory is touched under it.

Counters live in fixed windows, so a window's table can be wiped whole when the window after
next begins: each window length in use (1 s per token, 60 s per address...) gets two tables,
one for even and one for odd windows. A key is looked up by linear probing in its window's
table only; no key ever outlives its window, so the tables never fill up with stale keys and a
lookup stays a few probes long however long the sandbox runs.

Layout: header (magic, layout, revocation generation), a directory of window lengths (period,
window held by table 0, by table 1), the journal writers (pid, rows queued, rows written), then
the tables of (key hash u64, count u64) slots.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import hashlib
import mmap
import os
import struct
import threading
import time
from pathlib import Path

from .base import StoreUnavailable, after_fork


class SharedState:
    MAGIC = b"PSBXSHM2"
    PERIODS = 8              # window lengths counted at once (one per rate setting in use)
    SLOTS = 1 << 14          # distinct keys one window can count (a table: 256 KiB)
    MAX_PROBE = 512
    WRITERS = 64             # processes journaling at once
    SLOT = struct.Struct("<QQ")        # key hash, count
    PERIOD = struct.Struct("<qqq")     # period, window of table 0, window of table 1
    WRITER = struct.Struct("<qQQ")     # pid, rows queued, rows written
    GENERATION = 16                    # offset of the revocation generation (u64)
    SEQUENCE = 24                      # offset of the last journal row number given (u64)
    DIRECTORY = 64
    WRITERS_AT = DIRECTORY + PERIODS * PERIOD.size
    TABLES = 4096
    TABLE_BYTES = SLOTS * SLOT.size
    SIZE = TABLES + PERIODS * 2 * TABLE_BYTES
    LAYOUT = struct.pack("<II", SLOTS, PERIODS)
    _ZEROS = bytes(TABLE_BYTES)

    def __init__(self, path: Path):
        self.path = path
        self._pid = None
        self._reopen_lock = threading.Lock()
        self._periods: dict[int, int] = {}  # period -> directory entry (entries never move)
        self._open()
        # A forked child (a gunicorn worker) reopens the file at once, while it has one thread:
        # flock(2) locks belong to the open file, which parent and child would otherwise share.
        after_fork(self, SharedState.reset_after_fork)

    def _open(self):
        self._pid = os.getpid()
        self._thread_lock = threading.Lock()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                head = os.pread(fd, 16, 0)
                if os.fstat(fd).st_size != self.SIZE or head != self.MAGIC + self.LAYOUT:
                    os.ftruncate(fd, 0)  # new, or another layout: start from zeros
                    os.ftruncate(fd, self.SIZE)
                    os.pwrite(fd, self.MAGIC + self.LAYOUT, 0)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
            self._map = mmap.mmap(fd, self.SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def reset_after_fork(self):
        """A forked process must lock through its own open file: flock locks belong to it."""
        with self._reopen_lock:
            if self._pid != os.getpid():
                old_fd, old_map = self._fd, self._map
                self._open()
                old_map.close()
                os.close(old_fd)

    def _locked(self):
        if self._pid != os.getpid():
            self.reset_after_fork()
        return _FileLock(self._thread_lock, self._fd)

    # --- revocations -------------------------------------------------------------------------
    def generation(self) -> int:
        return struct.unpack_from("<Q", self._map, self.GENERATION)[0]

    def bump_generation(self):
        with self._locked():
            struct.pack_into("<Q", self._map, self.GENERATION, self.generation() + 1)

    # --- journal row numbers --------------------------------------------------------------
    # Rows are numbered when their call is counted, under the lock: a call answered before
    # another was sent has the smaller number, whichever worker's writer writes it first.
    def number(self) -> int:
        with self._locked():
            return self._next_number()

    def _next_number(self) -> int:
        value = struct.unpack_from("<Q", self._map, self.SEQUENCE)[0] + 1
        struct.pack_into("<Q", self._map, self.SEQUENCE, value)
        return value

    def raise_numbers(self, floor: int):
        """Never give a number the journal already holds (a counter file made anew)."""
        with self._locked():
            if struct.unpack_from("<Q", self._map, self.SEQUENCE)[0] < floor:
                struct.pack_into("<Q", self._map, self.SEQUENCE, floor)

    # --- counters ----------------------------------------------------------------------------
    def count(self, counters, now: float, numbered: bool = False):
        """Add one to each (key, period) in the window holding `now`; the new counts, all
        under one lock. numbered: (counts, the call's journal row number)."""
        out = []
        with self._locked():
            for key, period in counters:
                out.append(self._add(key, period, int(now // period)))
            if numbered:
                return out, self._next_number()
        return out

    def _add(self, key: str, period: int, window: int) -> int:
        table = self._table(period, window)
        if table is None:  # a call that waited past the window after next: its window is over
            return 1
        wanted = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") or 1
        mask, mm, slot = self.SLOTS - 1, self._map, self.SLOT
        index = wanted & mask
        for _ in range(self.MAX_PROBE):
            offset = table + index * slot.size
            held, count = slot.unpack_from(mm, offset)
            if held == wanted:
                slot.pack_into(mm, offset, held, count + 1)
                return count + 1
            if held == 0:
                slot.pack_into(mm, offset, wanted, 1)
                return 1
            index = (index + 1) & mask
        raise StoreUnavailable(f"{self.path}: more than ~{self.SLOTS // 2} different callers in one "
                               f"{period}-second window; the rate-limit table is full")

    def _table(self, period: int, window: int) -> int | None:
        """Offset of the table counting `window`, wiped first if it last counted an older one."""
        entry = self._periods.get(period)
        if entry is None:
            entry = self._periods[period] = self._claim_period(period)
        parity = window & 1
        at = self.DIRECTORY + entry * self.PERIOD.size + 8 + 8 * parity
        held = struct.unpack_from("<q", self._map, at)[0]
        table = self.TABLES + (2 * entry + parity) * self.TABLE_BYTES
        if held != window:
            if held > window:
                return None
            self._map[table:table + self.TABLE_BYTES] = self._ZEROS
            struct.pack_into("<q", self._map, at, window)
        return table

    def _claim_period(self, period: int) -> int:
        for entry in range(self.PERIODS):
            at = self.DIRECTORY + entry * self.PERIOD.size
            held = self.PERIOD.unpack_from(self._map, at)[0]
            if held == period:
                return entry
            if held == 0:
                self.PERIOD.pack_into(self._map, at, period, -1, -1)
                return entry
        raise StoreUnavailable(f"{self.path}: more than {self.PERIODS} different rate-limit periods in use")

    # --- journal writers ---------------------------------------------------------------------
    def claim_writer(self) -> int:
        """A writer entry of its own: a free one, or one whose process is gone (never one of
        this process: two stores on one data folder in one process each publish their own)."""
        pid = os.getpid()
        with self._locked():
            for index in range(self.WRITERS):
                held = self.WRITER.unpack_from(self._map, self._writer_at(index))[0]
                if held == 0 or (held != pid and not _alive(held)):
                    self.WRITER.pack_into(self._map, self._writer_at(index), pid, 0, 0)
                    return index
        raise StoreUnavailable(f"{self.path}: more than {self.WRITERS} processes journal at once")

    def _writer_at(self, index: int) -> int:
        return self.WRITERS_AT + index * self.WRITER.size

    # One process writes each field of its entry (a single aligned 8-byte store), others only read.
    def set_queued(self, index: int, rows: int):
        struct.pack_into("<Q", self._map, self._writer_at(index) + 8, rows)

    def set_written(self, index: int, rows: int):
        struct.pack_into("<Q", self._map, self._writer_at(index) + 16, rows)

    def writers(self) -> list[tuple[int, int, int]]:
        """[(entry, pid, rows queued)] of every process that has journaled."""
        out = []
        for index in range(self.WRITERS):
            pid, queued, _ = self.WRITER.unpack_from(self._map, self._writer_at(index))
            if pid:
                out.append((index, pid, queued))
        return out

    def written(self, index: int) -> int:
        return struct.unpack_from("<Q", self._map, self._writer_at(index) + 16)[0]

    def abandon_writer(self, index: int, pid: int):
        """A writer that died with rows queued: readers stop waiting for it."""
        with self._locked():
            if self.WRITER.unpack_from(self._map, self._writer_at(index))[0] == pid:
                self.WRITER.pack_into(self._map, self._writer_at(index), 0, 0, 0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# flock(2) called WITHOUT releasing the GIL (ctypes.PyDLL keeps it), non-blocking. Python's
# fcntl.flock releases the GIL around the call: a worker would then get the file lock, and wait
# for its GIL (held by one of its other threads, for up to 5 ms) while every other worker waits
# for the file lock: a convoy that cost a third of the throughput under load. Taken and given
# back while holding the GIL, the lock is held for the few microseconds of the count itself.
try:
    _libc = ctypes.PyDLL(ctypes.util.find_library("c"), use_errno=True)
    _flock = _libc.flock
    _flock.argtypes, _flock.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _sched_yield = _libc.sched_yield
    _sched_yield.argtypes, _sched_yield.restype = (), ctypes.c_int
except (OSError, AttributeError, TypeError):  # no C library to call: the GIL-releasing call it is
    _flock = None

# When another worker holds the file lock, wait for it with the GIL kept, yielding the CPU
# (the holder is another process: it needs the CPU, not our GIL). Sleeping instead releases
# the GIL while this thread holds the process's thread lock, and every other thread that
# reaches a count piles up behind it: measured, a quarter of the counts waited, ~1 ms on
# average. Bounded, because the holder may be a second store of this very process (tests
# open two on one folder) that needs our GIL to finish: then the sleep below lets it run.
_SPINS = 200


class _FileLock:
    __slots__ = ("thread_lock", "fd")

    def __init__(self, thread_lock, fd):
        self.thread_lock, self.fd = thread_lock, fd

    def __enter__(self):
        self.thread_lock.acquire()
        try:
            if _flock is None:
                fcntl.flock(self.fd, fcntl.LOCK_EX)
                return
            pause, spins = 0.00002, _SPINS
            while _flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB) != 0:
                error = ctypes.get_errno()
                if error not in (errno.EWOULDBLOCK, errno.EINTR):
                    raise OSError(error, os.strerror(error))
                if spins:
                    spins -= 1
                    _sched_yield()
                    continue
                time.sleep(pause)
                pause = min(pause * 2, 0.001)
        except BaseException:
            self.thread_lock.release()
            raise

    def __exit__(self, *exc):
        if _flock is None or _flock(self.fd, fcntl.LOCK_UN) != 0:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        self.thread_lock.release()
