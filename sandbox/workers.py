"""gunicorn's sync worker, with answers that wait handed off (`--threads 1`, server.py).

A sync worker serves one connection at a time: a call that waits on a latency (fixture
`latency_ms`, fault `latency=`) would hold the whole worker for that long, and two of them
stall a two-worker server. Here the call is counted, judged and journaled as any other (its one
store step done at once, so counts and the journal stay exact), then its answer is written as
usual but into a buffer; when the request is done, the connection (a duplicate of its socket)
and that buffer go to the worker's Deferred thread, which sends them once the latency has
passed. The worker is free for the next connection meanwhile.

The app asks through the socket gunicorn puts in the WSGI environ (`gunicorn.socket`): this
worker's socket has `defer(seconds)`; any other server's has not, and the app sleeps in place.

Why by hand: gunicorn's own workers either hold a thread per waiting call (gthread: 16 sleepers
take all 16 threads, bench/README.md) or need an event loop (gevent, eventlet), whose monkey-
patching would turn LMDB's blocking, GIL-holding write transaction and redis-py's socket calls
into loop stalls and add a dependency for one feature. A heap of (time, answer) and one sender
thread per worker is the smallest piece that keeps the sync worker and frees it.

Connections that have not sent their whole request wait in a lobby (lobby.py), not in the
worker.
"""
from __future__ import annotations

import errno
import heapq
import itertools
import logging
import os
import selectors
import socket
import threading
import time

from gunicorn import util
from gunicorn.workers.sync import SyncWorker

from .lobby import SEND_TIMEOUT, Arrived, Lobby

logger = logging.getLogger("sandbox")
PENDING_LIMIT = 256  # answers waiting in one worker; past it a call waits in place, as elsewhere


class Deferred:
    """Answers due later: one thread sends each at its time, in time order."""

    def __init__(self, limit=PENDING_LIMIT):
        self.limit = limit
        self._due = []  # heap of (time due, order, socket, bytes)
        self._order = itertools.count()
        self._ready = threading.Condition()
        self._sending = False  # an answer taken off the heap, not yet sent
        self._thread = None

    def room(self) -> bool:
        return len(self._due) < self.limit

    def add(self, due: float, sock, data: bytes):
        with self._ready:
            heapq.heappush(self._due, (due, next(self._order), sock, data))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="sandbox-deferred", daemon=True)
                self._thread.start()
            self._ready.notify()

    def _run(self):
        while True:
            with self._ready:
                while not self._due or self._due[0][0] > time.monotonic():
                    self._ready.wait(self._due[0][0] - time.monotonic() if self._due else None)
                _, _, sock, data = heapq.heappop(self._due)
                self._sending = True
            _send(sock, data)
            with self._ready:
                self._sending = False
                self._ready.notify_all()  # drain() waits until nothing is due or being sent

    def drain(self, timeout: float):
        """Send what is pending before the worker exits (at its time, within `timeout`)."""
        deadline = time.monotonic() + timeout
        with self._ready:
            while (self._due or self._sending) and time.monotonic() < deadline:
                self._ready.wait(min(0.1, max(0.0, deadline - time.monotonic())))
        for _, _, sock, _ in self._due:  # past the grace time: their clients see the connection close
            sock.close()


def _send(sock, data: bytes):
    try:
        sock.settimeout(SEND_TIMEOUT)
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)  # as gunicorn closes a connection: FIN after the answer
    except OSError as exc:  # the client left meanwhile: as with any answer it no longer reads
        logger.debug("deferred answer not delivered: %s", exc)
    finally:
        sock.close()


def close_at_once(sock):
    """Close a connection whose request (without a body) was answered: FIN, then what the client
    already sent drained without waiting, then close. gunicorn's own close (util.close_graceful)
    waits up to 2 s for the client to close first, a round trip during which a sync worker
    serves no one; the drain keeps what it guards against (a close with unread bytes turns into
    a reset that can cut the answer). gunicorn's close that follows finds the socket closed."""
    try:
        sock.shutdown(socket.SHUT_WR)
        sock.setblocking(False)
        while sock.recv(65536):
            pass
    except OSError:  # nothing more to read now (or the client already left)
        pass
    finally:
        sock.close()


def _bodiless(req) -> bool:
    """A request that sent no body: once parsed, nothing of it can still be on its way."""
    headers = {name: value for name, value in req.headers}
    return "TRANSFER-ENCODING" not in headers and headers.get("CONTENT-LENGTH", "0").strip() == "0"


class HeldSocket:
    """The request's socket as the app and gunicorn's Response see it. What is written is
    kept, and goes out in one write when the request is done (gunicorn writes the status and
    headers, then the body: two sends, the second a tenth of a loaded worker's CPU), or past
    FLUSH_AT; once `defer` is called, it is sent by Deferred when its time comes."""

    FLUSH_AT = 65536

    def __init__(self, sock, deferred: Deferred):
        self._sock = sock
        self._deferred = deferred
        self.delay = None
        self.buffer = bytearray()

    def defer(self, seconds: float) -> bool:
        """Hold the answer `seconds` without holding the worker; False: no room, wait in place."""
        if self.delay is None and not self._deferred.room():
            return False
        self.delay = time.monotonic() + seconds
        return True

    def sendall(self, data):
        self.buffer += data
        if self.delay is None and len(self.buffer) >= self.FLUSH_AT:
            self.flush()

    def send(self, data):
        if self.delay is None and not self.buffer:  # gunicorn's "100 Continue": at once
            return self._sock.send(data)
        self.buffer += data
        return len(data)

    def flush(self):
        if self.buffer and self.delay is None:
            self._sock.sendall(self.buffer)
            self.buffer.clear()

    def sendfile(self, *args, **kwargs):  # a file's bytes go after what is kept
        self.flush()
        return self._sock.sendfile(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._sock, name)


class DeferringSyncWorker(SyncWorker):
    """gunicorn's sync worker whose answers that wait, and connections that have not sent
    their request, leave it free (module docstring)."""

    def init_process(self):
        self.deferred = Deferred()
        super().init_process()

    def handle_request(self, listener, req, client, addr):
        held = HeldSocket(client, self.deferred)
        raw = getattr(client, "raw", client)  # under TLS, gunicorn's own wrapped socket
        try:
            result = super().handle_request(listener, req, held, addr)
        finally:
            if isinstance(client, Arrived):
                client.reading = False
        # Reached only when the answer was written (an error raises past this): the connection
        # is Deferred's from here, until it has sent the answer.
        if held.delay is not None:  # detached: gunicorn's close of `client` now closes nothing
            self.deferred.add(held.delay, socket.socket(fileno=raw.detach()), bytes(held.buffer))
            return result
        held.flush()
        if _bodiless(req):  # else gunicorn's own close, which waits out a body left unread
            close_at_once(raw)
        return result

    def run(self):
        """SyncWorker's loop, with the Lobby's connections in its select."""
        selector = selectors.DefaultSelector()
        lobby = Lobby(selector, read_ahead=not self.cfg.is_ssl)
        for listener in self.sockets:
            listener.setblocking(False)
            selector.register(listener, selectors.EVENT_READ, None)
        selector.register(self.PIPE[0], selectors.EVENT_READ, "wakeup")
        try:
            while self.alive:
                self.notify()
                next_expiry = lobby.expire(time.monotonic())
                wait = self.timeout or 0.5
                if next_expiry is not None:
                    wait = max(0.0, min(wait, next_expiry - time.monotonic()))
                for key, _ in selector.select(wait):
                    if key.data == "wakeup":
                        os.read(self.PIPE[0], 64)
                        continue
                    if key.data is None:
                        request = self._accept(lobby, key.fileobj)
                    else:
                        request = lobby.readable(key.fileobj)
                    if request is not None:
                        self.handle(*request)
                    if not self.alive:
                        break
                if not self.is_parent_alive():
                    break
        finally:  # stopping (SIGTERM): the answers already counted are still sent
            lobby.close_all()
            selector.close()
            self.deferred.drain(self.cfg.graceful_timeout)

    def _accept(self, lobby, listener):
        try:
            sock, addr = listener.accept()
        except OSError as exc:  # another worker took it first
            if exc.errno in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                return None
            raise
        util.close_on_exec(sock)
        try:
            return lobby.arrive(listener, sock, addr)
        except ConnectionError:
            sock.close()
            return None
