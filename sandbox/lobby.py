"""Where a sync worker keeps the connections whose request has not come whole (workers.py).

A sync worker reads a request as soon as it accepts its connection, so one client that connects
and sends nothing, or sends its headers a byte at a time, would hold the worker. Here a
connection waits in the worker's Lobby (the worker's own selector, no thread) until its headers,
and a Content-Length body, have come whole; the rest of its request must come within
REQUEST_TIMEOUT of its connection; a connection still incomplete by then is closed, and the
Lobby holds at most LOBBY_LIMIT connections and LOBBY_BYTES (the oldest go first). gunicorn's
gthread worker parks silent connections alike but lets a slow one hold a thread as long as it
drips; nginx in front (docs/public-instance.md) holds them all, away from the workers.

Why by hand: gunicorn has no such stage for its sync worker, and an event-loop worker (gevent,
eventlet) would monkey-patch LMDB's and redis-py's blocking calls (workers.py).
"""
from __future__ import annotations

import collections
import select
import selectors
import time

SEND_TIMEOUT = 10.0  # seconds an answer may take to be written to its client
REQUEST_TIMEOUT = 10.0  # seconds from a connection to its request come whole (nginx's doc: 10 s)
LOBBY_LIMIT = 512  # connections one worker keeps waiting for their headers
HEADERS_READ = 65536  # past this much without the headers' end, the parser judges what came
BODY_READ = 1 << 20  # a body up to this (a persona's limit) waits in the Lobby; a larger one is read by the app
LOBBY_BYTES = 32 << 20  # what one worker's Lobby holds in all; past it, the oldest go first


class Arrived:
    """A connection as gunicorn's parser and Response see it: what the Lobby read comes first,
    the rest of the request must come before the deadline (a client too slow reads as gone)."""

    def __init__(self, sock, data: bytes, deadline: float):
        self.raw = sock
        self._data = data
        self.deadline = deadline
        self.reading = True  # until the request has been answered

    def recv(self, size):
        if self._data:
            chunk, self._data = self._data[:size], self._data[size:]
            return chunk
        if not self.reading:
            return self.raw.recv(size)
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            return b""
        self.raw.settimeout(remaining)
        try:
            return self.raw.recv(size)
        except TimeoutError:
            return b""

    def sendall(self, data):
        self.raw.settimeout(SEND_TIMEOUT)
        return self.raw.sendall(data)

    def send(self, data):
        self.raw.settimeout(SEND_TIMEOUT)
        return self.raw.send(data)

    def __getattr__(self, name):
        return getattr(self.raw, name)


class Waiting:
    """One connection in the Lobby: what it sent so far, and how much its request needs."""
    __slots__ = ("listener", "addr", "data", "deadline", "need")

    def __init__(self, listener, addr):
        self.listener, self.addr = listener, addr
        self.data = bytearray()
        self.deadline = time.monotonic() + REQUEST_TIMEOUT
        self.need = None  # bytes of the whole request, once its headers have come

    def whole(self, added: int) -> bool:
        """Has the request come whole? Each byte is looked at once for the headers' end, so a
        client sending a byte at a time costs the worker no more than one sending it at once."""
        if self.need is None:
            end = self.data.find(b"\r\n\r\n", max(0, len(self.data) - added - 3))
            if end < 0:
                return len(self.data) >= HEADERS_READ
            self.need = request_length(bytes(self.data[:end]))
        return len(self.data) >= self.need


class Lobby:
    """Connections accepted whose request has not all come: read as it arrives, without a
    thread, in the worker's own selector."""

    def __init__(self, selector, read_ahead: bool):
        self.selector = selector
        self.read_ahead = read_ahead  # False under TLS: the bytes are the handshake's
        self.waiting = collections.OrderedDict()  # socket -> Waiting, the oldest first
        self.bytes = 0  # read and held, all connections together

    def __len__(self):
        return len(self.waiting)

    def arrive(self, listener, sock, addr):
        """A new connection: its request if it has come whole already, else None (it waits)."""
        entry = Waiting(listener, addr)
        sock.setblocking(False)
        complete = self._read(sock, entry)
        if complete:
            return self._leave(sock, entry)
        if complete is None:
            self.bytes -= len(entry.data)
            sock.close()
            return None
        if len(self.waiting) >= LOBBY_LIMIT:
            self._close(next(iter(self.waiting)))
        self.waiting[sock] = entry
        self.selector.register(sock, selectors.EVENT_READ, self)
        return None

    def readable(self, sock):
        """`sock` has something: its request if whole now, else None (gone, or waits on)."""
        entry = self.waiting.get(sock)
        if entry is None:  # pushed out by a newer one after the selector reported it
            return None
        try:
            complete = self._read(sock, entry)
        except ConnectionError:
            complete = None
        if complete is None:
            self._close(sock)
        elif complete:
            self.selector.unregister(sock)
            del self.waiting[sock]
            return self._leave(sock, entry)
        return None

    def expire(self, now: float):
        while self.waiting:
            sock, entry = next(iter(self.waiting.items()))
            if entry.deadline > now:
                return entry.deadline
            self._close(sock)
        return None

    def close_all(self):
        for sock in list(self.waiting):
            self._close(sock)

    def _read(self, sock, entry: Waiting):
        """True: the request is whole (or enough to judge); False: not yet; None: it left."""
        if not self.read_ahead:
            return bool(select_readable(sock))
        try:
            data = sock.recv(HEADERS_READ)
        except BlockingIOError:
            return False
        if not data:
            return None
        entry.data += data
        self.bytes += len(data)
        if self.bytes > LOBBY_BYTES:
            for older in list(self.waiting):
                if self.bytes <= LOBBY_BYTES:
                    break
                if older is not sock:
                    self._close(older)
        return entry.whole(len(data))

    def _leave(self, sock, entry: Waiting):
        self.bytes -= len(entry.data)
        sock.setblocking(True)
        if not self.read_ahead:  # gunicorn wraps it in TLS itself
            return entry.listener, sock, entry.addr
        return entry.listener, Arrived(sock, bytes(entry.data), entry.deadline), entry.addr

    def _close(self, sock):
        entry = self.waiting.pop(sock, None)
        if entry is not None:
            self.bytes -= len(entry.data)
        try:
            self.selector.unregister(sock)
        except (KeyError, ValueError):
            pass
        sock.close()


def request_length(head: bytes) -> int:
    """The bytes a request needs, from its headers (`head`, up to the blank line): the headers
    and a Content-Length body; 0 (hand it over now) for a chunked body, `Expect: 100-continue`
    (the client waits for gunicorn's go-ahead) or a body past BODY_READ: the app reads those,
    within the deadline. Only enough HTTP to know when to stop waiting: gunicorn's parser,
    which reads the request next, judges it."""
    length = 0
    for line in head.lower().split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip() == b"content-length":
            length = int(value) if value.strip().isdigit() else 0
        elif name.strip() in (b"transfer-encoding", b"expect"):
            return 0
    return 0 if length > BODY_READ else len(head) + 4 + length


def select_readable(sock) -> bool:
    return bool(select.select([sock], [], [], 0)[0])
