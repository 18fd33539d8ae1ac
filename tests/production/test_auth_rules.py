"""Authentication as production's code does it (sandbox/api/auth.py, sandbox/production/errors.py).

Each test names the production file it mirrors (path under siade/ of datagouv/apistration).
"""
from __future__ import annotations

import time

import jwt

from ..conftest import RECIPIENT, SECRET, token_for

V2 = "/api/v2/situations-pole-emploi?identifiant=default"
V3 = f"/v3/france_travail/statut/identifiant?identifiant=default&recipient={RECIPIENT}"
FC_V2 = "/api/v2/composition-familiale-v2"


def test_every_version_takes_bearer_then_x_api_key_then_query_token(client):
    """app/lib/user_resolution_middleware.rb: Bearer, then X-Api-Key, then ?token=, on every version."""
    token = token_for()
    for path in (V2, V3):
        assert client.get(path, headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert client.get(path, headers={"X-Api-Key": token}).status_code == 200
        assert client.get(f"{path}&token={token}").status_code == 200
        # the Bearer wins: a bad one is not rescued by a good X-Api-Key
        assert client.get(path, headers={"Authorization": "Bearer nope", "X-Api-Key": token}).status_code == 401


def test_bearer_is_read_case_sensitively(client):
    """app/controllers/concerns/handle_tokens.rb: /\\ABearer (.+)\\z/, so `bearer x` is no token."""
    response = client.get(V3, headers={"Authorization": f"bearer {token_for()}"})
    assert response.status_code == 401 and response.get_json()["errors"][0]["code"] == "00101"


def test_a_failing_token_falls_back_on_the_query_token(client):
    """app/controllers/concerns/handle_tokens.rb (extract_user_from_token: params[:token] || bearer)."""
    response = client.get(f"{V3}&token={token_for()}", headers={"Authorization": "Bearer not-a-token"})
    assert response.status_code == 200


def test_any_bearer_on_a_france_connect_v2_route_is_a_france_connect_token(client):
    """app/controllers/concerns/api_particulier/france_connectable.rb: an API Particulier token
    sent as Bearer to a FranceConnect-capable v2 route is checked with FranceConnect, and refused."""
    response = client.get(FC_V2, query_string={"recipient": RECIPIENT},
                          headers={"Authorization": f"Bearer {token_for()}"})
    assert response.status_code == 401
    detail = "Le jeton d'accès n'a pas été trouvé ou est expiré."
    assert response.get_json() == {"error": "access_denied", "reason": detail, "message": detail}


def test_france_connect_error_body_on_v3(client):
    """app/errors/invalid_france_connect_access_token_error.rb + config/errors.yml (50002): title
    "Accès non autorisé", no source."""
    response = client.get(f"/v3/dss/quotient_familial/france_connect?recipient={RECIPIENT}",
                          headers={"Authorization": "Bearer no-such-token"})
    assert response.status_code == 401
    assert response.get_json() == {"errors": [{
        "code": "50002", "title": "Accès non autorisé",
        "detail": "Le jeton d'accès n'a pas été trouvé ou est expiré.", "meta": {}}]}


def test_expired_token_v2_flat_and_v3_texts(client):
    """app/controllers/api_controller.rb (user_no_longer_authorized, v2's error_format 'flat'),
    app/errors/expired_token_error.rb, config/errors.yml 00103 (api_particulier text, source token)."""
    now = int(time.time())
    expired = jwt.encode({"uid": "0c7b6f3e-2a1d-4c55-9a8e-4f2b1c3d5e6f", "jti": "1c7b6f3e-2a1d-4c55-9a8e-4f2b1c3d5e6f",
                          "scopes": ["pole_emploi_identite"], "iat": now - 100, "exp": now - 10}, SECRET,
                         algorithm="HS256")
    detail = ("Votre token est expiré. Vous devez refaire une demande à API Particulier, un guide est disponible sur "
              "https://particulier.api.gouv.fr/faq#comment-renouveler-mon-jeton-arrivant-a-expiration")
    v2 = client.get(V2, headers={"X-Api-Key": expired})
    assert v2.status_code == 401 and v2.get_json() == {"errors": [detail]}
    v3 = client.get(V3, headers={"Authorization": f"Bearer {expired}"})
    assert v3.status_code == 401
    assert v3.get_json() == {"errors": [{"code": "00103", "title": "Jeton expiré", "detail": detail,
                                         "source": {"parameter": "token"}, "meta": {}}]}


def test_revoked_token_v2_flat_and_v3_texts(client):
    """config/initializers/rack_attack.rb (blocklisted_responder: flat under /api/v2/),
    app/errors/blacklisted_token_error.rb, config/errors.yml 00105."""
    minted = client.post("/sandbox/tokens", json={"ttl": 600}).get_json()
    assert client.delete(f"/sandbox/tokens/{minted['jti']}", headers={"X-Api-Key": minted["token"]}).status_code == 204
    detail = ("Votre jeton est sur liste noire, celui-ci a certainement été divulgué sur un canal non-sécurisé. "
              "Vous pouvez trouver un jeton valide sur votre espace personnel: https://particulier.api.gouv.fr/compte")
    v2 = client.get(V2, headers={"X-Api-Key": minted["token"]})
    assert v2.status_code == 401 and v2.get_json() == {"errors": [detail]}
    v3 = client.get(V3, headers={"Authorization": f"Bearer {minted['token']}"})
    assert v3.get_json()["errors"][0] == {"code": "00105", "title": "Jeton sur liste noire", "detail": detail,
                                          "source": {"parameter": "token"}, "meta": {}}


def test_v2_insufficient_scopes_is_401_access_denied(client):
    """app/controllers/api_particulier/v2/base_controller.rb (user_not_authorized: 401 on v2, 403 on v3)."""
    token = token_for(["cnaf_enfants"])
    v2 = client.get(V2, headers={"X-Api-Key": token})
    assert v2.status_code == 401 and v2.get_json()["error"] == "access_denied"
    v3 = client.get(V3, headers={"Authorization": f"Bearer {token}"})
    assert v3.status_code == 403 and v3.get_json()["errors"][0]["source"] == {"parameter": "token"}


def test_v2_france_connect_call_requires_a_recipient(client):
    """concerns/api_particulier/france_connectable.rb (verify_recipient_is_a_siret! if france_connect?)
    and spec/controllers/api_particulier/v2/base_controller_france_connectable_spec.rb: 400 without one."""
    from sandbox.production import validation_rules
    from werkzeug.datastructures import MultiDict
    from sandbox.production.errors import ParameterErrors
    try:
        validation_rules.check("api_particulier_v2_cnav_prime_activite", False, MultiDict(), {}, france_connect=True)
    except ParameterErrors as error:
        assert error.items[0]["detail"] == "Le paramètre recipient n'est pas un siret valide"
    else:
        raise AssertionError("a FranceConnect call without recipient passed")
