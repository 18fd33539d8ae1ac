"""CORS as a browser app meets it: through a real gunicorn server, and every header value a str.

The test client (werkzeug) turns any header value into text, so a value given as an int passes
there and breaks under gunicorn, which refuses it and answers 500 instead. Hence a real server
here, and PEP 3333's rule (header names and values are str, as gunicorn checks) over every kind
of answer.
"""
from __future__ import annotations

import pytest
import requests
from werkzeug.test import Client

from .conftest import RECIPIENT, token_for, v2_headers, v3_headers

ALLOWED = "http://localhost:3000"   # the README's own example
REFUSED = "http://localhost:4000"
V2 = "/api/v2/situations-pole-emploi?identifiant=default"
V3 = f"/v3/france_travail/statut/identifiant?identifiant=default&recipient={RECIPIENT}"


def _preflight(url, origin, header):
    return requests.options(url, headers={"Origin": origin, "Access-Control-Request-Method": "GET",
                                          "Access-Control-Request-Headers": header}, timeout=10)


@pytest.mark.slow
@pytest.mark.parametrize("path, header, auth", [(V2, "X-Api-Key", v2_headers), (V3, "Authorization", v3_headers)],
                         ids=["v2", "v3"])
def test_a_named_origin_calls_the_api_through_gunicorn(start_server, path, header, auth):
    server = start_server("--workers", "1", env={"SANDBOX_CORS_ORIGINS": ALLOWED})
    url = server.url + path

    preflight = _preflight(url, ALLOWED, header)
    assert preflight.status_code in (200, 204), (preflight.status_code, preflight.text[:300])
    assert preflight.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert preflight.headers["Access-Control-Max-Age"] == "600"
    assert header.lower() in preflight.headers["Access-Control-Allow-Headers"].lower()
    assert "GET" in preflight.headers["Access-Control-Allow-Methods"]

    answer = requests.get(url, headers={"Origin": ALLOWED, **auth(token_for())}, timeout=10)
    assert answer.status_code == 200, answer.text[:300]
    assert answer.headers["Access-Control-Allow-Origin"] == ALLOWED
    exposed = answer.headers["Access-Control-Expose-Headers"]
    assert "RateLimit-Remaining" in exposed and "X-Sandbox-Case" in exposed

    # an error answer is read by the browser app too (its status and body)
    refused = requests.get(url, headers={"Origin": ALLOWED}, timeout=10)
    assert refused.status_code == 401
    assert refused.headers["Access-Control-Allow-Origin"] == ALLOWED

    # another origin: the server answers, without letting the browser read it
    other = _preflight(url, REFUSED, header)
    assert other.status_code in (200, 204), other.text[:300]
    assert "Access-Control-Allow-Origin" not in other.headers
    other = requests.get(url, headers={"Origin": REFUSED, **auth(token_for())}, timeout=10)
    assert other.status_code == 200
    assert "Access-Control-Allow-Origin" not in other.headers
    assert "Traceback" not in server.output()


def test_every_header_value_is_a_str(make_app, token):
    """PEP 3333 as gunicorn enforces it, over every kind of API and sandbox answer. (wsgiref's
    validator would also refuse production's answers without a Content-Type.)"""
    app = make_app(cors_origins=ALLOWED, ip_rate_limit="off")
    seen = []

    def checked(environ, start_response):
        def check(status, headers, exc_info=None):
            bad = [(name, value) for name, value in headers if type(name) is not str or type(value) is not str]
            assert not bad, (environ["REQUEST_METHOD"], environ["PATH_INFO"], bad)
            seen.append(status)
            return start_response(status, headers, exc_info)
        return app(environ, check)

    client = Client(checked)
    origin = {"Origin": ALLOWED}
    calls = [
        ("OPTIONS", V2, {**origin, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "X-Api-Key"}),
        ("OPTIONS", V3, {**origin, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "Authorization"}),
        ("OPTIONS", "/sandbox/tokens", {**origin, "Access-Control-Request-Method": "POST"}),
        ("GET", V2, {**origin, **v2_headers(token)}),
        ("GET", V3, {**origin, **v3_headers(token)}),
        ("GET", V2, origin),
        ("GET", V3, {**origin, **v3_headers(token), "X-Sandbox-Fault": "api_rate_limited"}),
        ("GET", V2, {**origin, **v2_headers(token), "Prefer": "code=503"}),
        ("GET", V2.replace("default", "nobody-at-all"), {**origin, **v2_headers(token)}),
        ("GET", "/api/v2/composition-familiale?numeroAllocataire=1&codePostal=75001", origin),
        ("GET", "/v3/nothing", origin),
        ("GET", "/api/ping", origin),
        ("GET", "/openapi.yml", origin),
        ("GET", "/sandbox/personas", origin),
        ("GET", "/docs", origin),
        ("POST", "/sandbox/tokens", origin),
    ]
    for method, path, headers in calls:
        answer = client.open(path, method=method, headers=headers)
        assert answer.status_code != 500, (method, path, answer.status_code)
    assert len(seen) == len(calls)
