"""Stopping and restarting loses nothing: SIGTERM drains the calls in flight, and a restart on
the same data folder keeps minted tokens valid (the generated secret lives there), revoked
tokens revoked and the journal (the embedded store lives there too)."""
from __future__ import annotations

import signal
import threading
import time

import pytest
import requests

from .conftest import RECIPIENT

pytestmark = pytest.mark.slow  # every test here starts a sandbox process

V2 = "/api/v2/situations-pole-emploi?identifiant=default"
V3 = f"/v3/france_travail/statut/identifiant?identifiant=default&recipient={RECIPIENT}"
GRACEFUL_TIMEOUT = 30  # sandbox/gunicorn_conf.py


def _in_background(call):
    """Run `call` in a thread; returns a function that waits for its answer (or raises its error)."""
    box = {}

    def run():
        try:
            box["answer"] = call()
        except Exception as exc:  # re-raised in the test's thread
            box["error"] = exc
    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def result(timeout=GRACEFUL_TIMEOUT + 10):
        thread.join(timeout)
        assert not thread.is_alive(), "the call never returned"
        if "error" in box:
            raise box["error"]
        return box["answer"]
    return result


def _mint(server, **body):
    answer = requests.post(server.url + "/sandbox/tokens", json=body, timeout=10)
    assert answer.status_code == 201, answer.text
    return answer.json()


@pytest.mark.parametrize("threads", ["8", "1"], ids=["gthread", "sync"])
def test_sigterm_drains_the_calls_in_flight_then_exits_0(start_server, threads):
    """Sync workers (SANDBOX_THREADS=1) hand a waiting answer off (sandbox/workers.py): it is
    sent all the same before the worker exits."""
    server = start_server("--workers", "2", env={"SANDBOX_THREADS": threads})
    token = _mint(server, ttl=600)["token"]
    slow = _in_background(lambda: requests.get(server.url + V2, timeout=60, headers={
        "X-Api-Key": token, "X-Sandbox-Fault": "latency=2000"}))
    faulted = _in_background(lambda: requests.get(server.url + V3, timeout=60, headers={
        "Authorization": f"Bearer {token}", "X-Sandbox-Fault": "timeout,latency=2000"}))
    time.sleep(0.7)  # both calls are in the workers, sleeping out their latency
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)  # the gunicorn master, as `docker stop` sends it
    answer, fault = slow(), faulted()
    assert answer.status_code == 200 and answer.json()["identifiant"] == "default", answer.text
    assert answer.headers["X-Sandbox-Case"].startswith("api_particulier_v2_pole_emploi_statut/")
    assert fault.status_code == 504 and fault.json()["errors"][0]["code"].endswith("002"), fault.text
    assert server.process.wait(GRACEFUL_TIMEOUT + 5) == 0, server.output()[-3000:]
    assert time.monotonic() - started < GRACEFUL_TIMEOUT
    log = server.output()
    assert "Traceback" not in log, log[-3000:]
    # and once it is gone, it is gone: no half-alive process still taking calls
    try:
        requests.get(server.url + "/api/ping", timeout=2)
        raise AssertionError("the server still answers after exiting")
    except requests.ConnectionError:
        pass


def test_a_call_started_after_sigterm_is_not_half_served(start_server):
    """During the drain, a new call is either served whole or refused at the door, never cut."""
    server = start_server("--workers", "1")
    token = _mint(server, ttl=600)["token"]
    slow = _in_background(lambda: requests.get(server.url + V2, timeout=60, headers={
        "X-Api-Key": token, "X-Sandbox-Fault": "latency=1500"}))
    time.sleep(0.5)
    server.process.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    try:
        late = requests.get(server.url + V2, headers={"X-Api-Key": token}, timeout=10)
    except (requests.ConnectionError, requests.Timeout):
        late = None  # refused at the door (or never taken in): the client sees it and can retry elsewhere
    assert late is None or (late.status_code == 200 and late.json()["identifiant"] == "default")
    assert slow().status_code == 200
    assert server.process.wait(GRACEFUL_TIMEOUT + 5) == 0


def test_a_restart_keeps_tokens_revocations_and_the_journal(tmp_path, start_server):
    env = {"SANDBOX_TOKEN_SECRET": "", "SANDBOX_DATA_DIR": str(tmp_path / "kept")}  # secret generated, kept
    server = start_server(env=env)
    kept, revoked = _mint(server, ttl=3600), _mint(server, ttl=3600)
    narrow = _mint(server, scopes=["pole_emploi_identite"], ttl=3600)
    for token in (kept, revoked, narrow):
        assert requests.get(server.url + V2, headers={"X-Api-Key": token["token"]}, timeout=10).status_code == 200
    assert requests.delete(f"{server.url}/sandbox/tokens/{revoked['jti']}", headers={"X-Api-Key": revoked["token"]},
                           timeout=10).status_code == 204
    before = requests.get(server.url + "/sandbox/requests", headers={"X-Api-Key": kept["token"]}, timeout=10).json()
    assert [e["status"] for e in before["requests"]] == [200]

    assert server.stop() == 0
    again = start_server(env=env)

    def v3(token):
        return requests.get(again.url + V3, headers={"Authorization": f"Bearer {token['token']}"}, timeout=10)
    assert v3(kept).status_code == 200
    assert v3(narrow).status_code == 200
    introspected = requests.get(again.url + "/api/introspect", headers={"X-Api-Key": narrow["token"]}, timeout=10)
    assert introspected.json()["scopes"] == ["pole_emploi_identite"], "the scopes survive too"
    refused = v3(revoked)
    assert refused.status_code == 401 and refused.json()["errors"][0]["code"] == "00105", refused.text
    after = requests.get(again.url + "/sandbox/requests", headers={"X-Api-Key": kept["token"]}, timeout=10).json()
    assert [(e["path"], e["status"]) for e in after["requests"]] == [
        ("/v3/france_travail/statut/identifiant", 200), ("/api/v2/situations-pole-emploi", 200)]
    assert after["requests"][1] == before["requests"][0], "the journal entry from before the restart is intact"
