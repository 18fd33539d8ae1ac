"""FranceConnect on a port of its own, at FranceConnect's exact paths.

FranceConnect serves its endpoints from its host's root (`/api/v2/authorize`, `/api/v2/token`,
`/api/v2/.well-known/openid-configuration`...), and some client libraries take a base address
only and join those absolute paths to it (france-connect-py fetches the discovery document from
the root whatever it is given). The main port cannot answer there: `/api/v2/...` are API
Particulier's v2 routes. So with `--franceconnect-port`, gunicorn also listens on that port, and
a request that came in on it (SERVER_PORT: gunicorn sets it from the listening socket, whatever
the Host header says) is the provider's: `/api/v2/X` is served by `/franceconnect/api/v2/X`,
with the issuer of that port (`http://<host>:<port>/api/v2`). The provider's own pages
(picker, consent, static files under `/franceconnect/`) work on both ports; nothing else of the
sandbox answers on that one, as FranceConnect's host serves FranceConnect only.
"""
from __future__ import annotations

import json

from .views import AT_ROOT, FC_PATHS, PREFIX


def serve_on_own_port(port: int | None, app):
    """`app`, also answering as FranceConnect for requests that came in on `port` (None: as is)."""
    if not port:
        return app
    own = str(port)
    provider_prefix = PREFIX.removesuffix(FC_PATHS)  # "/franceconnect"

    def dispatch(environ, start_response):
        if environ.get("SERVER_PORT") != own:
            return app(environ, start_response)
        path = environ.get("PATH_INFO") or "/"
        if path == FC_PATHS or path.startswith(FC_PATHS + "/"):
            environ = {**environ, "PATH_INFO": provider_prefix + path, AT_ROOT: True}
        elif not path.startswith(provider_prefix + "/"):
            return _not_here(start_response, path)
        return app(environ, start_response)

    return dispatch


def _not_here(start_response, path):
    body = json.dumps({"error": "not_found",
                       "error_description": f"{path[:200]} : ce port ne sert que FranceConnect, sous {FC_PATHS}/ "
                                            "(l'API Particulier est sur le port principal du bac à sable)."},
                      ensure_ascii=False).encode()
    start_response("404 NOT FOUND", [("Content-Type", "application/json; charset=utf-8"),
                                     ("Content-Length", str(len(body))), ("Cache-Control", "no-store")])
    return [body]
