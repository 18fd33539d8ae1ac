"""A built-in FranceConnect: an OpenID Connect provider that behaves like FranceConnect v2's
integration environment, whose citizens are the sandbox's personas (docs/franceconnect.md).

`blueprint(sandbox)` builds the provider once, at start-up (signing key, clients; the citizen
directory on first use), hands its token check to the API's authenticator, and returns the Flask blueprint.
`serve_on_own_port(port, app)` wraps the whole app so that the provider also answers on a port of
its own at FranceConnect's exact paths (own_port.py).

May import: api/ (the Identity a token carries), production/, population/, store/, settings.
"""
from __future__ import annotations

from .own_port import serve_on_own_port
from .personas import Personas
from .provider import Provider
from .views import make_blueprint

__all__ = ["blueprint", "serve_on_own_port"]


def blueprint(sandbox):
    personas = Personas(sandbox.population, sandbox.operations)
    provider = Provider(sandbox.settings, sandbox.store, sandbox.catalogue, personas)
    sandbox.franceconnect = provider
    sandbox.authenticator.oidc = provider  # Authenticator.france_connect asks it about tokens it issued
    return make_blueprint(sandbox, provider)
