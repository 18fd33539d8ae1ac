"""Sync workers (SANDBOX_THREADS=1, sandbox/workers.py): a call waiting on a latency holds no
worker. It is counted and journaled at once, answered in full once its latency has passed, and
meanwhile the worker serves every other call."""
from __future__ import annotations

import threading
import time

import pytest
import requests

from .conftest import require, token_for

pytestmark = pytest.mark.slow  # real gunicorn

V2 = "/api/v2/situations-pole-emploi?identifiant=default"
LATENCY_MS = 6000
SLEEPERS = 6


def _sleeping_calls(server, token, headers):
    answers, done = {}, threading.Event()

    def call(i):
        started = time.monotonic()
        answer = requests.get(server.url + V2, headers={"X-Api-Key": token, **headers}, timeout=60)
        answers[i] = (answer, time.monotonic() - started)
        if len(answers) == SLEEPERS:
            done.set()
    threads = [threading.Thread(target=call, args=(i,), daemon=True) for i in range(SLEEPERS)]
    for thread in threads:
        thread.start()
    return threads, answers, done


def _journal(server, token):
    answer = requests.get(server.url + "/sandbox/requests", headers={"X-Api-Key": token}, timeout=10)
    assert answer.status_code == 200
    return answer.json()["requests"]


@pytest.mark.parametrize("fault, status", [("latency", 200), ("timeout,latency", 504)])
def test_calls_waiting_on_a_latency_leave_a_single_sync_worker_free(start_server, fault, status):
    server = start_server("--workers", "1", env={"SANDBOX_THREADS": "1"})
    sleeper = token_for()
    threads, answers, done = _sleeping_calls(server, sleeper, {"X-Sandbox-Fault": f"{fault}={LATENCY_MS}"})

    # counted and journaled before they are answered, readable at once
    deadline = time.monotonic() + 30
    while len(_journal(server, sleeper)) < SLEEPERS and time.monotonic() < deadline:
        time.sleep(0.05)
    rows = _journal(server, sleeper)
    assert [r["fault"] for r in rows] == [f"{fault}={LATENCY_MS}"] * SLEEPERS
    assert not answers, "a waiting call was answered before its latency"

    # the one worker serves others meanwhile, with their own counts
    other = token_for()
    served = [requests.get(server.url + V2, headers={"X-Api-Key": other}, timeout=10) for _ in range(12)]
    assert [a.status_code for a in served] == [200] * 12
    # their own counts: 19, 18, ... in each one-second window (the Date header names it)
    by_window = {}
    for answer in served:
        by_window.setdefault(answer.headers["Date"], []).append(int(answer.headers["RateLimit-Remaining"]))
    assert all(left == list(range(19, 19 - len(left), -1)) for left in by_window.values()), by_window
    assert not answers, "the other calls waited for the sleeping ones"

    assert done.wait(60)
    for thread in threads:
        thread.join(5)
    for answer, elapsed in answers.values():
        assert answer.status_code == status, answer.text
        assert elapsed >= LATENCY_MS / 1000  # the latency asked for, no less
        assert answer.headers["Content-Length"] == str(len(answer.content))
        assert answer.headers["Connection"] == "close" and answer.headers["X-Request-ID"]
        assert answer.headers["RateLimit-Limit"] == "20"
        if status == 200:
            assert answer.json()["identifiant"] == "default"
        else:
            assert answer.json()["error"]
    assert "Traceback" not in server.output()


def test_without_sync_workers_a_latency_is_waited_in_its_thread(start_server):
    """gthread (the default threads): the call's thread sleeps, its answer is the same."""
    server = start_server("--workers", "1", env={"SANDBOX_THREADS": "2"})
    started = time.monotonic()
    answer = requests.get(server.url + V2, headers={"X-Api-Key": token_for(), "X-Sandbox-Fault": "latency=1000"},
                          timeout=30)
    assert answer.status_code == 200 and answer.json()["identifiant"] == "default"
    assert time.monotonic() - started >= 1.0


def test_a_sync_worker_answers_calls_with_a_body_and_a_browser_s_keep_alive(start_server):
    """A POST's body is read whole before its answer; a client asking for keep-alive gets its
    answer and `Connection: close`, then a new connection for its next call."""
    server = start_server("--workers", "1", env={"SANDBOX_THREADS": "1"})
    with requests.Session() as session:
        minted = session.post(server.url + "/sandbox/tokens", json={"ttl": 600, "label": "x" * 5000}, timeout=10)
        assert minted.status_code == 201 and minted.json()["token"], minted.text  # the unknown key is ignored
        assert minted.headers["Connection"] == "close"
        token = session.post(server.url + "/sandbox/tokens", json={"ttl": 600}, timeout=10).json()["token"]
        answers = [session.get(server.url + V2, headers={"X-Api-Key": token}, timeout=10) for _ in range(3)]
    assert [a.json()["identifiant"] for a in answers] == ["default"] * 3


# Connections that do not send their request (sandbox/workers.py's Lobby): a sync worker serves
# others meanwhile, and closes them once REQUEST_TIMEOUT has passed.

def _connect(server):
    import socket
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    return sock


def _closed_by_server(sock) -> bool:
    """True once the server has closed: its end reads as EOF (or a reset)."""
    import socket
    sock.settimeout(30)
    try:
        return sock.recv(65536) == b""
    except (ConnectionResetError, socket.timeout):
        return False


def _get(server, token) -> int:
    return requests.get(server.url + V2, headers={"X-Api-Key": token}, timeout=10).status_code


def test_silent_and_dripping_connections_hold_no_sync_worker(start_server):
    from sandbox.lobby import REQUEST_TIMEOUT
    server = start_server("--workers", "1", env={"SANDBOX_THREADS": "1"})
    silent = [_connect(server) for _ in range(40)]
    dripping = [_connect(server) for _ in range(4)]
    for sock in dripping:
        sock.sendall(b"GET /api/v2/situations-pole-emploi?identifiant=default HTTP/1.1\r\nHost: x\r\n")
    opened = time.monotonic()
    other = token_for()
    assert [_get(server, other) for _ in range(10)] == [200] * 10  # the one worker serves at once
    # the headers keep coming a byte at a time: the worker still serves others
    for byte in b"X-Api-Key: ":
        for sock in dripping:
            sock.sendall(bytes([byte]))
        assert _get(server, token_for()) == 200
        time.sleep(0.1)
    # past the deadline, the server has closed them all, without an answer
    for sock in silent + dripping:
        assert _closed_by_server(sock)
        sock.close()
    assert time.monotonic() - opened >= REQUEST_TIMEOUT - 1  # not before their time
    assert _get(server, other) == 200
    assert "Traceback" not in server.output()


def test_a_request_sent_in_pieces_is_answered_by_a_sync_worker(start_server):
    server = start_server("--workers", "1", env={"SANDBOX_THREADS": "1"})
    token = token_for()
    request = (f"GET {V2} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Api-Key: {token}\r\n\r\n").encode()
    sock = _connect(server)
    for start in range(0, len(request), 40):
        sock.sendall(request[start:start + 40])
        time.sleep(0.02)
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    sock.close()
    assert answer.startswith(b"HTTP/1.1 200 ") and b'"identifiant":"default"' in answer.replace(b" ", b"")


def test_a_body_that_drips_past_the_deadline_is_cut_and_others_are_served(start_server):
    from sandbox.lobby import REQUEST_TIMEOUT
    server = start_server("--workers", "1", env={"SANDBOX_THREADS": "1"})
    body = b'{"ttl": 600}' + b" " * 40
    sock = _connect(server)
    sock.sendall(b"POST /sandbox/tokens HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 + f"Content-Length: {len(body)}\r\n\r\n".encode())
    sent, cut = 0, False
    for byte in body:  # a byte every half second: the whole body would take 26 s
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            cut = True
            break
        sent += 1
        # a worker reading this body would not answer the other client until it is whole
        if sent % 4 == 0:
            assert _get(server, token_for()) == 200
        time.sleep(REQUEST_TIMEOUT / 20)
        sock.setblocking(False)
        try:
            if sock.recv(65536) is not None:
                cut = True  # an answer (the body's error) or EOF: the server is done with it
                break
        except BlockingIOError:
            pass
        finally:
            sock.setblocking(True)
    sock.close()
    assert cut and sent < len(body), sent
    assert "Traceback" not in server.output()


def test_the_lobby_keeps_at_most_its_limit_the_oldest_go_first(start_server):
    from sandbox.lobby import LOBBY_LIMIT
    server = start_server("--workers", "1", env={"SANDBOX_THREADS": "1"})
    first = [_connect(server) for _ in range(5)]
    time.sleep(0.5)  # accepted before the others
    rest = [_connect(server) for _ in range(LOBBY_LIMIT)]
    assert _get(server, token_for()) == 200
    for sock in first:  # pushed out by the newer ones, well before the deadline
        assert _closed_by_server(sock)
    newest = rest[-1]
    newest.sendall(f"GET {V2} HTTP/1.1\r\nHost: x\r\nX-Api-Key: {token_for()}\r\n\r\n".encode())
    assert newest.recv(65536).startswith(b"HTTP/1.1 200 ")
    for sock in first + rest:
        sock.close()


@pytest.mark.parametrize("how", [[], ["-H", "Transfer-Encoding: chunked"], ["-H", "Expect:"]],
                         ids=["expect-100-continue", "chunked", "content-length"])
def test_curl_s_bodies_reach_a_sync_worker_whole(start_server, tmp_path, how):
    """curl sends a body over 1 KiB after `Expect: 100-continue`, or chunked when asked."""
    import json
    import subprocess
    curl = require("curl")
    server = start_server("--workers", "1", env={"SANDBOX_THREADS": "1"})
    body = tmp_path / "body.json"
    body.write_text(json.dumps({"ttl": 600, "scopes": ["cnaf_enfants"], "label": "x" * 5000}))
    answer = tmp_path / "answer.json"
    done = subprocess.run([curl, "-sS", "-o", str(answer), "-w", "%{http_code}", "-X", "POST",
                           "-H", "Content-Type: application/json", *how,
                           "--data-binary", f"@{body}", server.url + "/sandbox/tokens"],
                          capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout) == (0, "201"), (done.stderr, answer.read_text())
    token = json.loads(answer.read_text())["token"]
    introspected = requests.get(server.url + "/api/introspect", headers={"X-Api-Key": token}, timeout=10)
    assert introspected.json()["scopes"] == ["cnaf_enfants"]


def test_a_connection_pushed_out_of_the_lobby_after_it_was_reported_readable_is_let_go():
    """The selector reports connections in a batch; one of them may be pushed out (the lobby
    full) while the worker handles an earlier one of the same batch."""
    import selectors
    import socket

    from sandbox.lobby import LOBBY_LIMIT, Lobby
    selector = selectors.DefaultSelector()
    lobby = Lobby(selector, read_ahead=True)
    pairs = [socket.socketpair() for _ in range(LOBBY_LIMIT + 1)]
    try:
        for server_end, _ in pairs[:LOBBY_LIMIT]:
            assert lobby.arrive(None, server_end, ("127.0.0.1", 0)) is None
        oldest = pairs[0][0]
        pairs[0][1].sendall(b"GET / HTTP/1.1\r\n")
        reported = [key.fileobj for key, _ in selector.select(0)]
        assert oldest in reported
        assert lobby.arrive(None, pairs[-1][0], ("127.0.0.1", 0)) is None  # the oldest goes
        assert lobby.readable(oldest) is None and len(lobby) == LOBBY_LIMIT
        try:  # closed (with what it sent unread: a reset)
            assert pairs[0][1].recv(1) == b""
        except ConnectionResetError:
            pass
        pairs[-1][1].sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        listener, arrived, _ = lobby.readable(pairs[-1][0])
        assert arrived.recv(65536).startswith(b"GET / HTTP/1.1")
    finally:
        lobby.close_all()
        selector.close()
        for _, client_end in pairs:
            client_end.close()
