"""GET /metrics: Prometheus' text format, read back with prometheus-client's own parser; the
sum over gunicorn's workers (multiprocess mode); who may read it on a public instance."""
from __future__ import annotations

import pytest
import requests

from .conftest import RECIPIENT, SECRET, token_for, v2_headers, v3_headers

V3_ROUTE = "/v3/france_travail/statut/identifiant"
QUERY = {"identifiant": "default", "recipient": RECIPIENT}


def samples(text: str) -> dict:
    """{(name, frozenset(labels)): value} of a scrape."""
    from prometheus_client.parser import text_string_to_metric_families
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(scrape: dict, name: str, **labels) -> float:
    return scrape.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def sandbox(make_app):
    return make_app(ip_rate_limit="off").test_client()


def scrape(client, **kwargs) -> dict:
    answer = client.get("/metrics", **kwargs)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.mimetype == "text/plain"
    return samples(answer.get_data(as_text=True))


def test_calls_refusals_tokens_and_store_use_are_counted(sandbox):
    before = scrape(sandbox)
    token = token_for()
    for _ in range(3):
        assert sandbox.get(V3_ROUTE, query_string=QUERY, headers=v3_headers(token)).status_code == 200
    assert sandbox.get(V3_ROUTE, query_string=QUERY, headers=v3_headers("forged")).status_code == 401
    assert sandbox.post("/sandbox/tokens", json={}).status_code == 201
    assert sandbox.post("/sandbox/tokens", data="{}", content_type="text/plain").status_code == 415
    assert sandbox.post("/sandbox/tokens", json={"ttl": 10 ** 12}).status_code == 400
    after = scrape(sandbox)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)
    assert delta("sandbox_calls_total", method="GET", route=V3_ROUTE, status="200") == 3
    assert delta("sandbox_calls_total", method="GET", route=V3_ROUTE, status="401") == 1
    assert delta("sandbox_calls_total", method="POST", route="/sandbox/tokens", status="201") == 1
    assert delta("sandbox_calls_total", method="POST", route="/sandbox/tokens", status="415") == 1
    assert delta("sandbox_refusals_total", reason="invalid_token") == 1
    assert delta("sandbox_refusals_total", reason="unsupported_media_type") == 1
    assert delta("sandbox_refusals_total", reason="invalid_parameter") == 1
    assert delta("sandbox_tokens_minted_total") == 1
    assert value(after, "sandbox_store_bound_bytes") >= value(after, "sandbox_store_used_bytes") > 0
    assert ("sandbox_runtime_personas", frozenset()) in after


def test_a_client_cannot_grow_the_series(sandbox):
    """Labels come from the routes the sandbox has, the statuses and a few methods: a client
    naming made-up paths or methods adds no series."""
    sandbox.get("/sandbox/nope")
    first = len(scrape(sandbox))
    for i in range(30):  # bounded
        sandbox.open(f"/sandbox/nope-{i}", method=f"FOO{i}")
        sandbox.get(f"/v3/made/up/{i}")
        sandbox.open(f"{V3_ROUTE}", method=f"BAR{i}")
    grown = {key for key in scrape(sandbox)}
    assert len(grown) <= first + 4, sorted(k for k in grown if k[0] == "sandbox_calls_total")


def test_a_rate_limit_is_a_quota_hit(make_app):
    app = make_app(rate_limit="2/minute", ip_rate_limit="off")
    app.extensions["sandbox"].store.clock = lambda: 1_700_000_000.0  # one window, whatever the time
    client = app.test_client()
    token = token_for()
    statuses = [client.get("/api/v2/situations-pole-emploi", query_string={"identifiant": "default"},
                           headers=v2_headers(token)).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    after = scrape(client)
    assert value(after, "sandbox_quota_hits_total", quota="rate_limit") == 1
    assert value(after, "sandbox_refusals_total", reason="rate_limited") == 1


def test_who_may_read_it(make_app):
    assert make_app().test_client().get("/metrics", environ_base={"REMOTE_ADDR": "192.0.2.1"}).status_code == 200
    public = make_app(public=True).test_client()
    assert public.get("/metrics").status_code == 200  # loopback: a scraper on the instance's machine
    for refused in (public.get("/metrics", environ_base={"REMOTE_ADDR": "192.0.2.1"}),
                    # loopback, but relayed by a proxy it was not told to trust: anyone on the internet
                    public.get("/metrics", headers={"X-Forwarded-For": "192.0.2.1"})):
        assert refused.status_code == 403 and refused.get_json()["error"] == "forbidden"
    listed = make_app(public=True, metrics_from="192.0.2.0/28").test_client()
    assert listed.get("/metrics", environ_base={"REMOTE_ADDR": "192.0.2.1"}).status_code == 200
    assert listed.get("/metrics", environ_base={"REMOTE_ADDR": "192.0.2.100"}).status_code == 403
    behind = make_app(public=True, trusted_proxies="127.0.0.1").test_client()
    assert behind.get("/metrics", headers={"X-Forwarded-For": "192.0.2.1"}).status_code == 403


@pytest.mark.slow
def test_the_workers_counts_add_up(start_server):
    """Two gunicorn workers, each counting in its own files: a scrape, whichever worker answers
    it, gives every call once."""
    server = start_server("--workers", "2", env={"SANDBOX_IP_RATE_LIMIT": "off", "SANDBOX_RATE_LIMIT": "off"})
    token = token_for()
    session = requests.Session()
    calls = 40
    for _ in range(calls):  # new connections: gunicorn's workers share them out
        assert requests.get(server.url + V3_ROUTE, params=QUERY, headers=v3_headers(token), timeout=10).status_code == 200
    for _ in range(5):  # every scrape, on whichever worker, says the same
        scraped = samples(session.get(server.url + "/metrics", timeout=10).text)
        assert value(scraped, "sandbox_calls_total", method="GET", route=V3_ROUTE, status="200") == calls
    assert SECRET not in requests.get(server.url + "/metrics", timeout=10).text
