"""Texts, headers and transport as production sends them (sandbox/api/transport.py, sandbox/production/errors.py).

Each test names the production file it mirrors (path under siade/ of datagouv/apistration).
"""
from __future__ import annotations

import re

import pytest
from werkzeug.datastructures import Headers

from sandbox.api import transport
from sandbox.production import requests

from ..conftest import RECIPIENT, token_for

V3 = f"/v3/france_travail/statut/identifiant?identifiant=default&recipient={RECIPIENT}"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@pytest.mark.parametrize("sent,kept", [("abc-123_x@y", "abc-123_x@y"), ("a b/c;d", "abcd"), ("x" * 300, "x" * 255),
                                       ("!!!", "")])
def test_request_id_echoes_the_clients_sanitised(sent, kept):
    """Rails' ActionDispatch::RequestId (actionpack 8.1, siade/Gemfile.lock): the client's X-Request-Id,
    stripped to [\\w-@] and 255 characters."""
    assert requests.request_id(Headers({"X-Request-Id": sent})) == kept


def test_request_id_is_a_uuid_when_none_is_sent():
    """ActionDispatch::RequestId: SecureRandom.uuid when the client sends none."""
    assert UUID.fullmatch(requests.request_id(Headers()))


def test_cache_headers():
    """app/controllers/concerns/cacheable.rb (init_x_response_cached_header); spec/controllers/
    api_particulier/v3_and_more/base_controller_spec.rb: false and an empty X-Cache-Expires-in."""
    assert transport.cache_headers() == {"X-Response-Cached": "false", "X-Cache-Expires-in": ""}


@pytest.mark.parametrize("v3,stage,expected", [(True, "answer", "application/vnd.api+json; charset=utf-8"),
                                               (True, "auth", "application/json; charset=utf-8"),
                                               (True, "recipient", "application/json; charset=utf-8"),
                                               (False, "answer", "application/json; charset=utf-8")])
def test_content_types(v3, stage, expected):
    """app/controllers/api_particulier/v3_and_more/base_controller.rb (set_content_type_header!,
    render_errors), api_controller.rb, v2/base_controller.rb."""
    assert transport.content_type(v3, stage) == expected


def test_unknown_route_answer():
    """app/controllers/errors_controller.rb#not_found via config/routes.rb's catch-all (every method)."""
    status, body, headers = transport.unknown_route_answer()
    assert status == 404 and headers["Content-Type"] == "text/plain; charset=utf-8"
    assert body.decode() == "Cette URL n'existe pas sur Api particulier, veuillez vérifier votre URL."


def test_unsupported_version_resolution(app):
    """app/controllers/concerns/version_aware.rb (00402 "La version v4 n'est pas supportée pour cet
    endpoint", spec/controllers/api_particulier/v3_and_more/base_controller_spec.rb) and
    lib/api_domain_constraint.rb (the segment must hold a digit; the controller reads it with to_i)."""
    by_path = {op.path: op for op in app.extensions["sandbox"].specs.operations if op.is_api}
    op, detail = transport.resolve_version("/v4/mesri/statut_etudiant/ine", by_path)
    assert op.path == "/v3/mesri/statut_etudiant/ine"
    assert detail == "La version v4 n'est pas supportée pour cet endpoint"
    op, detail = transport.resolve_version("/v03/mesri/statut_etudiant/ine", by_path)
    assert op.path == "/v3/mesri/statut_etudiant/ine" and detail is None
    assert transport.resolve_version("/vx/mesri/statut_etudiant/ine", by_path) is None
    assert transport.resolve_version("/v3/nothing/here", by_path) is None


def test_unsupported_version_error_body():
    """config/errors.yml 00402 (title) and app/errors/unsupported_api_version_error.rb (404, no source)."""
    from sandbox.production.errors import ApiError, render
    status, body = render(ApiError("unsupported_version", detail="La version v4 n'est pas supportée pour cet endpoint"), True)
    assert status == 404
    assert body == {"errors": [{"code": "00402", "title": "Version d'API non prise en charge",
                                "detail": "La version v4 n'est pas supportée pour cet endpoint", "meta": {}}]}


def test_v3_source_only_where_production_sets_it(client):
    """config/errors.yml: the token errors carry source {parameter: token}; 00380 carries none."""
    missing = client.get(f"/v3/france_travail/statut/identifiant?recipient={RECIPIENT}",
                         headers={"Authorization": f"Bearer {token_for()}"}).get_json()["errors"][0]
    assert "source" not in missing and missing["code"] == "00380"
    unauthorized = client.get(V3).get_json()["errors"][0]
    assert unauthorized["source"] == {"parameter": "token"}


def test_client_request_id_is_echoed(client):
    """ActionDispatch::RequestId: the answer's X-Request-Id is the client's."""
    response = client.get(V3, headers={"Authorization": f"Bearer {token_for()}", "X-Request-Id": "trace-42"})
    assert response.headers["X-Request-Id"] == "trace-42"


def test_v3_answers_carry_cache_headers_and_json_api_type(client):
    """concerns/cacheable.rb and v3_and_more/base_controller.rb."""
    response = client.get(V3, headers={"Authorization": f"Bearer {token_for()}"})
    assert response.headers["X-Response-Cached"] == "false" and response.headers["X-Cache-Expires-in"] == ""
    assert response.headers["Content-Type"].startswith("application/vnd.api+json")


def test_unknown_route_is_plain_text_404(client):
    """app/controllers/errors_controller.rb (also for a wrong method: no 405 in production)."""
    response = client.get("/api/v2/nothing-here")
    assert response.status_code == 404 and response.headers["Content-Type"].startswith("text/plain")


def test_unsupported_version_is_00402(client):
    """concerns/version_aware.rb: after the token and scope checks, 404 00402."""
    response = client.get(f"/v4/mesri/statut_etudiant/ine?ine=1234567890A&recipient={RECIPIENT}",
                          headers={"Authorization": f"Bearer {token_for()}"})
    assert response.status_code == 404 and response.get_json()["errors"][0]["code"] == "00402"
