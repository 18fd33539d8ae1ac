"""X-Forwarded-For / -Proto are believed from the listed proxies only, and a public instance
served over TLS answers HSTS.

A client that could pick its address would step around the per-address limits (and land its
calls on another's count); one that could pick its scheme would change the addresses the
FranceConnect discovery gives. Observed as a client sees them: the per-address limit of
/sandbox/* (3 a minute here), `Strict-Transport-Security`, the discovery's issuer.
"""
from __future__ import annotations

import time

import pytest
import requests

from ..conftest import SECRET

DISCOVERY = "/franceconnect/api/v2/.well-known/openid-configuration"
LIMIT = 3
RATE = f"{LIMIT}/hour"  # windows are aligned on the epoch: the test must not straddle two


def _app(tmp_path_factory, **settings):
    """In-process, the store's clock frozen: one window for the whole test."""
    from sandbox import Settings, create_app
    app = create_app(Settings(token_secret=SECRET, data_dir=tmp_path_factory.mktemp("proxies"), reload_interval=0,
                              sandbox_rate_limit=RATE, **settings))
    app.extensions["sandbox"].store.clock = lambda: 1_700_000_000.0
    return app.test_client()


def fresh_window(period=3600, margin=90):
    """A real server's clock cannot be frozen: start the test far enough from the window's end."""
    left = period - time.time() % period
    if left < margin:
        time.sleep(left + 0.5)


def scopes(client, peer, forwarded_for=None, proto=None):
    headers = {k: v for k, v in (("X-Forwarded-For", forwarded_for), ("X-Forwarded-Proto", proto)) if v}
    return client.get("/sandbox/scopes", headers=headers, environ_base={"REMOTE_ADDR": peer})


def test_forwarded_headers_from_an_unlisted_peer_change_nothing(tmp_path_factory):
    client = _app(tmp_path_factory, public=True, trusted_proxies="10.9.9.9")
    bystander = "127.0.0.2"
    assert scopes(client, bystander).status_code == 200
    # each call claims another address: all are the peer's, and the peer's limit is reached
    statuses = [scopes(client, "127.0.0.1", forwarded_for=f"198.51.100.{i}").status_code for i in range(LIMIT + 1)]
    assert statuses == [200] * LIMIT + [429]
    https = scopes(client, bystander, proto="https")
    assert https.status_code == 200 and "Strict-Transport-Security" not in https.headers
    issuer = client.get(DISCOVERY, headers={"X-Forwarded-Proto": "https"},
                        environ_base={"REMOTE_ADDR": "127.0.0.3"}).get_json()["issuer"]
    assert issuer.startswith("http://")
    assert scopes(client, bystander).status_code == 200, "the bystander's own count is untouched"


def test_a_listed_proxys_forwarded_headers_are_believed(tmp_path_factory):
    client = _app(tmp_path_factory, public=True, trusted_proxies="127.0.0.0/30, ::1")
    # two clients behind the one proxy: each has its own count
    statuses = [scopes(client, "127.0.0.1", forwarded_for="198.51.100.7").status_code for _ in range(LIMIT + 1)]
    assert statuses == [200] * LIMIT + [429]
    assert scopes(client, "127.0.0.1", forwarded_for="198.51.100.8").status_code == 200
    # only the hop the proxy added counts: what the client put before it is not believed
    assert scopes(client, "127.0.0.1", forwarded_for="198.51.100.8, 198.51.100.7").status_code == 429
    https = scopes(client, "127.0.0.1", forwarded_for="198.51.100.9", proto="https")
    assert https.headers["Strict-Transport-Security"] == "max-age=31536000"
    plain = scopes(client, "127.0.0.1", forwarded_for="198.51.100.9", proto="http")
    assert "Strict-Transport-Security" not in plain.headers
    discovery = client.get(DISCOVERY, headers={"X-Forwarded-Proto": "https"}, environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert discovery.get_json()["issuer"].startswith("https://")


def test_hsts_is_a_public_instances(tmp_path_factory):
    client = _app(tmp_path_factory, trusted_proxies="127.0.0.1")
    answer = scopes(client, "127.0.0.1", forwarded_for="198.51.100.1", proto="https")
    assert answer.status_code == 200 and "Strict-Transport-Security" not in answer.headers


@pytest.mark.slow
def test_gunicorn_believes_the_listed_proxies_only(start_server, tmp_path):
    """gunicorn reads X-Forwarded-Proto itself (its forwarded_allow_ips, loopback by default):
    the sandbox sets it to the same list."""
    fresh_window()
    env = {"SANDBOX_SANDBOX_RATE_LIMIT": RATE, "SANDBOX_PUBLIC": "1"}
    closed = start_server(env={**env, "SANDBOX_DATA_DIR": str(tmp_path / "closed")})
    answer = requests.get(closed.url + DISCOVERY, headers={"X-Forwarded-Proto": "https"}, timeout=10)
    assert answer.json()["issuer"].startswith("http://") and "Strict-Transport-Security" not in answer.headers
    statuses = [requests.get(closed.url + "/sandbox/scopes", headers={"X-Forwarded-For": f"198.51.100.{i}"},
                             timeout=10).status_code for i in range(LIMIT)]
    assert statuses == [200] * (LIMIT - 1) + [429], "the discovery call above was the peer's first"

    listed = start_server(env={**env, "SANDBOX_TRUSTED_PROXIES": "127.0.0.1", "SANDBOX_DATA_DIR": str(tmp_path / "listed")})
    answer = requests.get(listed.url + DISCOVERY, headers={"X-Forwarded-Proto": "https"}, timeout=10)
    assert answer.json()["issuer"].startswith("https://")
    assert answer.headers["Strict-Transport-Security"] == "max-age=31536000"
    statuses = [requests.get(listed.url + "/sandbox/scopes", headers={"X-Forwarded-For": "198.51.100.1"},
                             timeout=10).status_code for _ in range(LIMIT + 1)]
    assert statuses == [200] * LIMIT + [429]
    bystander = requests.get(listed.url + "/sandbox/scopes", headers={"X-Forwarded-For": "198.51.100.2"}, timeout=10)
    assert bystander.status_code == 200
