"""Sync workers (SANDBOX_THREADS=1, sandbox/workers.py): a call waiting on a latency holds no
worker. It is counted and journaled at once, answered in full once its latency has passed, and
meanwhile the worker serves every other call."""
from __future__ import annotations

import threading
import time

import pytest
import requests

from .conftest import token_for

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
    assert served[-1].headers["RateLimit-Remaining"] == "8"
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
