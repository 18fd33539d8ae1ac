"""Scale-out on Redis: several `serve --redis URL` instances count as one, and a Redis outage
is answered 503 (never 500, never unlimited, never a hung call) until Redis is back.

Everything runs for real: redis-server from the `redis_server` fixture, gunicorn sandboxes
from `start_server`, on loopback ports.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
import redis
import requests

from sandbox.api.auth import mint
from sandbox.production.scopes import ScopeCatalogue

from .conftest import SECRET, free_port, token_for
from .test_ratelimit import V2_PATH, V3_PATH, assert_exact, burst, rhythm_fixtures

pytestmark = pytest.mark.slow  # every test here starts a sandbox process



def _serve(start_server, tmp_path, redis_url, *extra, **kwargs):
    return start_server("--redis", redis_url, "--fixtures", str(rhythm_fixtures(tmp_path)), *extra, **kwargs)


def _timed_get(url, headers):
    """A call that would hang ends in requests' own timeout (an exception, the test fails): no
    wall-clock threshold here, the machine's load must not decide a verdict."""
    return requests.get(url, headers=headers, timeout=10), None


def test_two_instances_on_one_redis_count_as_one(start_server, redis_server, tmp_path):
    first = _serve(start_server, tmp_path, redis_server.url)
    second = start_server("--redis", redis_server.url, "--fixtures", str(tmp_path / "rythme"))
    token = token_for()
    calls = [((first if i % 2 else second).url + V2_PATH, {"X-Api-Key": token}) for i in range(100)]
    answers = burst(calls, workers=25)
    windows = assert_exact(answers, 20)  # 20 a window in all, across both instances
    # both instances answered in the busiest window: each one's calls met the other's count
    # (which instance got the 20 admissions depends on which answered first)
    busiest = max(windows, key=lambda reset: len(windows[reset]))
    answered_by = {url.split("/")[2] for (url, _), a in zip(calls, answers) if a.header("RateLimit-Reset") == busiest}
    assert len(answered_by) == 2 and len(windows[busiest]) > 20
    # a second token is unaffected, on either instance, and counted once for both
    other = {"Authorization": f"Bearer {token_for()}"}
    answers = [requests.get(server.url + V3_PATH, headers=other, timeout=10) for server in (first, second)]
    assert [a.status_code for a in answers] == [200, 200]
    remaining = [a.headers["RateLimit-Remaining"] for a in answers]
    same_window = answers[0].headers["RateLimit-Reset"] == answers[1].headers["RateLimit-Reset"]
    assert remaining == (["19", "18"] if same_window else ["19", "19"])


def test_redis_unreachable_at_start_exits_with_a_clear_message(tmp_path):
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "sandbox", "serve", "--redis", url, "--port", str(free_port()),
                             "--data-dir", str(tmp_path), "--token-secret", SECRET],
                            capture_output=True, text=True, timeout=60)
    took = time.monotonic() - started
    assert result.returncode != 0
    assert f"Redis at {url} is unreachable" in result.stderr
    assert "Traceback" not in result.stderr
    assert took < 10, took  # it does not keep retrying, nor load the fixtures first


def test_redis_outage_answers_503_then_service_resumes(start_server, redis_server, tmp_path):
    server = _serve(start_server, tmp_path, redis_server.url)
    token = token_for()
    v2 = (server.url + V2_PATH, {"X-Api-Key": token})
    v3 = (server.url + V3_PATH, {"Authorization": f"Bearer {token}"})
    assert requests.get(*v2[:1], headers=v2[1], timeout=10).status_code == 200

    redis_server.kill()
    for _ in range(6):  # several calls, so that every pooled connection of both workers is hit
        answer, took = _timed_get(*v2)
        assert answer.status_code == 503, answer.text
        body = answer.json()
        assert body["error"] == "error" and "Redis" in body["reason"]
        answer, took = _timed_get(*v3)
        assert answer.status_code == 503, answer.text
        assert answer.json()["errors"][0]["code"] == "00501"
    journal = requests.get(server.url + "/sandbox/requests", headers={"X-Api-Key": token}, timeout=10)
    assert journal.status_code == 503 and journal.json()["error"] == "error"
    assert requests.get(server.url + "/api/ping", timeout=10).status_code == 200  # the process is alive

    redis_server.start()  # same port, empty (no persistence in the fixture)
    answers = [_timed_get(*(v2 if i % 2 else v3)) for i in range(25)]
    assert answers[0][0].status_code == 200  # the very first call after Redis returns: stale connections are replaced
    statuses = [a.status_code for a, _ in answers]
    assert statuses.count(200) >= 20 and set(statuses) <= {200, 429}

    # a restart between two calls: the pooled connections are dead, the next call still works
    redis_server.kill()
    redis_server.start()
    assert [_timed_get(*v3)[0].status_code for _ in range(6)] == [200] * 6
    assert "Traceback" not in server.output()


def test_frozen_redis_does_not_hang_calls(start_server, redis_server, tmp_path):
    """A Redis that accepts connections but never answers (SIGSTOP): each call 503 (after the
    client's 1 s socket timeout), none left hanging."""
    server = _serve(start_server, tmp_path, redis_server.url)
    headers = {"X-Api-Key": token_for()}
    assert requests.get(server.url + V2_PATH, headers=headers, timeout=10).status_code == 200
    redis_server.process.send_signal(signal.SIGSTOP)
    try:
        for _ in range(3):
            answer, took = _timed_get(server.url + V2_PATH, headers)
            assert answer.status_code == 503
    finally:
        redis_server.process.send_signal(signal.SIGCONT)
    answer, _ = _timed_get(server.url + V2_PATH, headers)
    assert answer.status_code == 200
    assert answer.json()["nom"] == "RYTHME"


def test_revocations_and_journal_live_in_redis_across_restarts(start_server, redis_server, tmp_path):
    all_scopes = ScopeCatalogue().all_scopes()
    kept, kept_claims = mint(SECRET, all_scopes, 3600)
    revoked, revoked_claims = mint(SECRET, all_scopes, 3600)
    server = _serve(start_server, tmp_path, redis_server.url)
    for _ in range(3):
        assert requests.get(server.url + V2_PATH, headers={"X-Api-Key": kept}, timeout=10).status_code == 200
    assert requests.delete(f"{server.url}/sandbox/tokens/{revoked_claims['jti']}", headers={"X-Api-Key": revoked},
                           timeout=10).status_code == 204
    assert server.stop() == 0

    direct = redis.Redis.from_url(redis_server.url)
    assert direct.llen(f"sandbox:journal:{kept_claims['jti']}") == 3
    assert direct.zscore("sandbox:revocations", revoked_claims["jti"]) is not None

    # a new instance, with an empty data folder of its own, sees the same state
    again = start_server("--redis", redis_server.url, "--fixtures", str(tmp_path / "rythme"),
                         env={"SANDBOX_DATA_DIR": str(tmp_path / "other-host")})
    journal = requests.get(again.url + "/sandbox/requests", headers={"X-Api-Key": kept}, timeout=10)
    assert journal.status_code == 200
    assert [e["status"] for e in journal.json()["requests"]] == [200, 200, 200]
    refused = requests.get(again.url + V3_PATH, headers={"Authorization": f"Bearer {revoked}"}, timeout=10)
    assert refused.status_code == 401
    assert refused.json()["errors"][0]["code"] == "00105"
    assert not (tmp_path / "other-host" / "store").exists()  # nothing was kept on disk


@pytest.mark.slow
def test_a_call_answered_from_outdated_personas_counts_nothing_on_redis(redis_server):
    from sandbox.store.redis_store import RedisStore
    from .test_store import assert_outdated_personas_count_nothing
    assert_outdated_personas_count_nothing(RedisStore(redis_server.url, 100))
