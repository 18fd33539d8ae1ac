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


class Lobby:
    """Connections accepted whose headers have not all come: read as they arrive, without a
    thread, in the worker's own selector."""

    def __init__(self, selector, read_ahead: bool):
        self.selector = selector
        self.read_ahead = read_ahead  # False under TLS: the bytes are the handshake's
        self.waiting = collections.OrderedDict()  # socket -> [listener, addr, data, deadline]
        self.bytes = 0  # read and held, all connections together

    def __len__(self):
        return len(self.waiting)

    def arrive(self, listener, sock, addr):
        """A new connection: its request if it has come whole already, else None (it waits)."""
        entry = [listener, addr, bytearray(), time.monotonic() + REQUEST_TIMEOUT]
        sock.setblocking(False)
        complete = self._read(sock, entry)
        if complete:
            return self._leave(sock, entry)
        if complete is None:
            self.bytes -= len(entry[2])
            sock.close()
            return None
        if len(self.waiting) >= LOBBY_LIMIT:
            self._close(next(iter(self.waiting)))
        self.waiting[sock] = entry
        self.selector.register(sock, selectors.EVENT_READ, self)
        return None

    def readable(self, sock):
        """`sock` has something: its request if whole now, else None (gone, or waits on)."""
        entry = self.waiting[sock]
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
            sock, (_, _, _, deadline) = next(iter(self.waiting.items()))
            if deadline > now:
                return deadline
            self._close(sock)
        return None

    def close_all(self):
        for sock in list(self.waiting):
            self._close(sock)

    def _read(self, sock, entry):
        """True: the request is whole (or enough to judge); False: not yet; None: it left."""
        if not self.read_ahead:
            return bool(select_readable(sock))
        try:
            data = sock.recv(HEADERS_READ)
        except BlockingIOError:
            return False
        if not data:
            return None
        entry[2] += data
        self.bytes += len(data)
        for older in list(self.waiting):
            if self.bytes <= LOBBY_BYTES:
                break
            if older is not sock:
                self._close(older)
        return request_whole(entry[2])

    def _leave(self, sock, entry):
        self.bytes -= len(entry[2])
        listener, addr, data, deadline = entry
        sock.setblocking(True)
        if not self.read_ahead:  # gunicorn wraps it in TLS itself
            return listener, sock, addr
        return listener, Arrived(sock, bytes(data), deadline), addr

    def _close(self, sock):
        entry = self.waiting.pop(sock, None)
        if entry is not None:
            self.bytes -= len(entry[2])
        try:
            self.selector.unregister(sock)
        except (KeyError, ValueError):
            pass
        sock.close()


def request_whole(data: bytearray) -> bool:
    """Has the request come whole: its headers, and a Content-Length body after them?

    Only enough HTTP to know when to stop waiting (gunicorn's parser, which reads the request
    next, judges it): a chunked body, `Expect: 100-continue` (the client waits for gunicorn's
    go-ahead) or a body past BODY_READ is left to the app to read, within the deadline."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return len(data) >= HEADERS_READ
    length = 0
    for line in bytes(data[:end]).lower().split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip() == b"content-length":
            length = int(value) if value.strip().isdigit() else 0
        elif name.strip() in (b"transfer-encoding", b"expect"):
            return True
    return length > BODY_READ or len(data) >= end + 4 + length


def select_readable(sock) -> bool:
    return bool(select.select([sock], [], [], 0)[0])
