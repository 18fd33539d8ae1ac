"""The "try it" documentation page at /docs, and the persona catalogue at /docs/personas.

Everything the pages load is served by the sandbox itself (Swagger UI's assets come from the
flask-swagger-ui package), so the page works offline and behind a firewall; the CSP header
makes that a rule the browser enforces, not just a habit of the templates.
"""
from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlencode

import flask_swagger_ui
from flask import Blueprint, abort, current_app, render_template, request, send_from_directory

from ..population.calls import RECIPIENT, client_query, curl
from .examples import retirement


SWAGGER_DIST = Path(flask_swagger_ui.__file__).parent / "dist"
# Only what the page uses: the standalone preset and its top bar (a box to load any URL's
# spec) stay out, so the console can only ever show this sandbox's own spec.
SWAGGER_ASSETS = {"swagger-ui-bundle.js", "swagger-ui.css", "favicon-16x16.png", "favicon-32x32.png"}

# 'self' only. Swagger UI sets style attributes from React, hence style-src 'unsafe-inline';
# its CSS embeds its icons as data: SVGs, hence img-src data:. No inline script: the page's
# init code is static/docs.js, and its configuration is an inert JSON data block.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; font-src 'self'; connect-src 'self'; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'self'")

bp = Blueprint("docs", __name__, static_folder="static", static_url_path="/docs/static",
               template_folder="templates")


def _sandbox():
    return current_app.extensions["sandbox"]


@bp.record_once
def _examples_at_start_up(state):
    """Registered once per app, in create_app; the examples are worked out on the first /openapi.yml."""
    from .examples import DocsSpec
    state.app.extensions["docs_spec"] = DocsSpec(state.app.extensions["sandbox"])


@bp.after_request
def _security_headers(response):
    response.headers["Content-Security-Policy"] = CSP
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@bp.get("/docs/")
@bp.get("/docs")  # registered first (innermost), so url_for builds this one
def docs_page():
    config = {
        "url": "/openapi.yml",
        "dom_id": "#swagger-ui",
        "deepLinking": True,
        "validatorUrl": None,  # the default sends the spec to validator.swagger.io
        "persistAuthorization": True,  # a token minted here survives the persona page's links
        "displayRequestDuration": True,
        "docExpansion": "none",
        "filter": True,
        "recipient": RECIPIENT,
    }
    return render_template("docs.html", config=config, groups=_scope_groups())


@bp.get("/docs/swagger-ui/<name>")
def swagger_asset(name):
    if name not in SWAGGER_ASSETS:
        abort(404)
    return send_from_directory(SWAGGER_DIST, name, max_age=3600)


@bp.get("/docs/personas")
def personas_page():
    sandbox = _sandbox()
    fixtures = sandbox.population.current
    entries = sandbox.personas.catalogue(fixtures.catalogue(sandbox.operations), None)  # + global runtime ones
    operations = [_persona_operation(entry, sandbox.operations.get(entry["operation_id"]), sandbox.settings.serve_retired)
                  for entry in entries]
    operations.sort(key=lambda op: bool(op["retired"]))  # retired routes last (a stable sort keeps the rest)
    return render_template("personas.html", operations=operations, base=request.url_root.rstrip("/"),
                           france_connect_tokens=sorted(fixtures.france_connect), public=sandbox.settings.public)


def _scope_groups() -> list:
    """[(provider, [scope, ...])] for the token form, providers in name order."""
    groups = {}
    for scope in _sandbox().catalogue.describe():
        groups.setdefault(scope["provider"] or "Autres", []).append(scope)
    return sorted(groups.items(), key=lambda item: item[0].lower())


def _persona_operation(entry: dict, op, serve_retired: bool) -> dict:
    path = entry.get("path") or (op.path if op else "")
    base = request.url_root.rstrip("/")
    cases = []
    for case in entry["cases"]:
        params = case.get("params") or {}
        pairs = client_query(op, params)
        try_params = {}
        for name, value in pairs:
            if name.endswith("[]"):
                try_params.setdefault(name, []).append(value)
            else:
                try_params[name] = value
        link = "/docs?" + urlencode({"operation": entry["operation_id"],
                                     "params": json.dumps(try_params, ensure_ascii=False, separators=(",", ":"))})
        cases.append({**case, "curl": curl(base, op, path, pairs), "try": link})
    retired = retirement(op, serve_retired)
    if retired and retired["answer"]:  # every case answers production's 410: shown as such
        cases = [{**case, "answers": 410, "try": None} for case in cases]
    return {**entry, "path": path, "cases": cases, "retired": retired,
            "version": "v3+" if op is not None and op.v3 else "v2",
            "france_connect_only": bool(op is not None and op.france_connect_only)}
