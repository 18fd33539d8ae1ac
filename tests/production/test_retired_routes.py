"""Retired routes as production answers them (sandbox/api/transport.py, sandbox/routes.py).

Mirrors siade/config/routes/api_particulier.rb (qf_v1_gone, svair_gone) and
siade/spec/requests/api_particulier/legacy_caf_famille_route_spec.rb.
"""
from __future__ import annotations

import pytest

from sandbox import Settings

from sandbox.api import transport

from ..conftest import token_for

QF_V1 = ("L'API Quotient Familial v1 n'est plus disponible depuis le 31/10/2025. Veuillez utiliser l'API v2 : "
         "https://particulier.api.gouv.fr/catalogue/cnav/quotient_familial")
SVAIR = "Cette URL n'existe plus sur API Particulier depuis le 8 janvier 2024. Veuillez mettre à jour votre application."


@pytest.mark.parametrize("path,text", [("/api/caf/famille", QF_V1), ("/api/impots/svair", SVAIR)])
def test_legacy_routes_outside_the_spec_answer_410_with_productions_text(client, path, text):
    """config/routes/api_particulier.rb; spec/requests/api_particulier/legacy_caf_famille_route_spec.rb
    (410, "n'est plus disponible"). Plain text, no Content-Type, no token needed."""
    response = client.get(path)
    assert response.status_code == 410
    assert response.get_data(as_text=True) == text
    assert "Content-Type" not in response.headers


@pytest.mark.parametrize("path,text", [("/api/v2/composition-familiale", QF_V1), ("/api/v2/avis-imposition", SVAIR)])
def test_retired_answer_table(path, text):
    """config/routes/api_particulier.rb: the v2 CAF v1 route and the DGFiP route answer 410 with their text."""
    assert transport.retired_answer(path) == (410, text.encode(), {})
    assert transport.retired_answer("/api/v2/composition-familiale-v2") is None


def test_serve_retired_keeps_only_the_caf_v1_route():
    """The setting off by default (SANDBOX_SERVE_RETIRED / --serve-retired) keeps the CAF v1 route for
    teams still migrating; production's other retired routes stay 410."""
    assert transport.retired_answer("/api/v2/composition-familiale", serve_retired=True) is None
    assert transport.retired_answer("/api/v2/avis-imposition", serve_retired=True)[0] == 410
    assert Settings().serve_retired is False
    assert Settings.from_env({"SANDBOX_SERVE_RETIRED": "1"}).serve_retired is True


def test_composition_familiale_is_gone_by_default(client):
    """config/routes/api_particulier.rb (composition-familiale -> qf_v1_gone): 410 by default."""
    response = client.get("/api/v2/composition-familiale", query_string={"numeroAllocataire": "0000354",
                                                                          "codePostal": "99148"},
                          headers={"X-Api-Key": token_for()})
    assert response.status_code == 410


def test_composition_familiale_answers_productions_text(client):
    """config/routes/api_particulier.rb: production's own text, before any token check."""
    response = client.get("/api/v2/composition-familiale")
    assert response.status_code == 410 and response.get_data(as_text=True) == QF_V1


def test_serve_retired_serves_the_caf_v1_route(make_app):
    """With the setting on, the bundled CAF v1 personas answer as before."""
    client = make_app(serve_retired=True).test_client()
    response = client.get("/api/v2/composition-familiale", query_string={"numeroAllocataire": "0000354",
                                                                          "codePostal": "99148"},
                          headers={"X-Api-Key": token_for()})
    assert response.status_code == 200
