"""The provider's HTTP side: FranceConnect v2's endpoints under /franceconnect/api/v2/ (and at
/api/v2/ on the provider's own port, own_port.py), the citizen picker and consent pages, the
personas list, and the "try it" page's callback."""
from __future__ import annotations

from urllib.parse import urlencode, urlsplit

from flask import Blueprint, Response, jsonify, redirect, render_template, request

from .provider import TRY_IT_MAX_TTL, ACR, IDENTITY_SCOPES, AuthorizeError, TokenError

PREFIX = "/franceconnect/api/v2"
FC_PATHS = "/api/v2"  # FranceConnect's own, at its host's root: served on the provider's own port (own_port.py)
AT_ROOT = "sandbox.franceconnect.at_root"  # environ key: the request came in at FranceConnect's own paths
TRY_IT_CALLBACK = "/franceconnect/essayer/retour"
# No inline script; no form-action: the consent form's answer redirects to the client's address.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
       "base-uri 'none'; frame-ancestors 'none'")


def issuer() -> str:
    """The address the provider was reached by: the id_token's `iss` must be the one the client's
    discovery gave, on whichever port it asked."""
    return request.url_root.rstrip("/") + (FC_PATHS if request.environ.get(AT_ROOT) else PREFIX)


def _with_query(uri: str, params: dict) -> str:
    return uri + ("&" if "?" in uri else "?") + urlencode({k: v for k, v in params.items() if v})


def make_blueprint(sandbox, provider) -> Blueprint:
    bp = Blueprint("franceconnect", __name__, template_folder="templates", static_folder="static",
                   static_url_path="/franceconnect/static")

    @bp.after_request
    def _headers(response):
        response.headers["Cache-Control"] = "no-store"
        if response.mimetype == "text/html":
            response.headers["Content-Security-Policy"] = CSP
            response.headers["Referrer-Policy"] = "no-referrer"
        return response

    def page_error(message: str, status: int = 400):
        return render_template("franceconnect/error.html", message=message), status

    def back_to_client(req: dict, **params):
        return redirect(_with_query(req["redirect_uri"], {**params, "state": req.get("state")}), 302)

    # --- discovery, keys ------------------------------------------------------------------------
    @bp.get(PREFIX + "/.well-known/openid-configuration")
    def discovery():
        base = issuer()
        return jsonify({
            "issuer": base,
            "authorization_endpoint": base + "/authorize",
            "token_endpoint": base + "/token",
            "userinfo_endpoint": base + "/userinfo",
            "end_session_endpoint": base + "/session/end",
            "jwks_uri": base + "/jwks",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code"],
            "subject_types_supported": ["pairwise"],
            "scopes_supported": sorted(IDENTITY_SCOPES) + sorted(provider.data_scopes),
            "claims_supported": ["sub", "given_name", "given_name_array", "family_name", "birthdate", "gender",
                                 "birthplace", "birthcountry", "preferred_username", "email"],
            "acr_values_supported": [ACR],
            "prompt_values_supported": ["none", "login", "consent"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "userinfo_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "claims_parameter_supported": False,
            "request_parameter_supported": False,
        })

    @bp.get(PREFIX + "/jwks")
    def jwks():
        return jsonify(provider.signer.jwks)

    # --- authorize, picker, consent --------------------------------------------------------------
    @bp.route(PREFIX + "/authorize", methods=["GET", "POST"])
    def authorize():
        args = request.values
        try:
            req = provider.check_authorize(args, request.host_url)
        except AuthorizeError as error:
            if not error.redirect:
                return page_error(error.description)
            return back_to_client({"redirect_uri": args.get("redirect_uri"), "state": args.get("state")},
                                  error=error.error, error_description=error.description)
        hint = req["login_hint"]
        directory = provider.personas.current()
        if "none" in req["prompt"]:  # the non-interactive path: the hinted citizen consents at once
            wanted = provider.data_scopes_of(req) if req["consent"] is None else req["consent"].split()
            return back_to_client(req, code=provider.consent(req, hint, wanted))
        if hint in directory.citizens:
            return consent_page(req, directory.citizens[hint])
        return render_template("franceconnect/picker.html", interaction=provider.interaction(req),
                               client_id=req["client_id"], households=directory.households,
                               data_scopes=provider.data_scopes_of(req))

    def consent_page(req, citizen):
        scopes = [provider.data_scopes[s] for s in provider.data_scopes_of(req)]
        identity_scopes = [s for s in req["scope"] if s in IDENTITY_SCOPES and s != "openid"]
        return render_template("franceconnect/consent.html", interaction=provider.interaction(req),
                               client_id=req["client_id"], citizen=citizen, scopes=scopes,
                               identity_scopes=identity_scopes)

    @bp.post("/franceconnect/interaction/choose")
    def choose():
        req = provider.read_interaction(request.form.get("interaction"))
        if req is None:
            return page_error("Cette page a expiré : recommencez la connexion depuis le service.")
        citizen = provider.personas.current().citizens.get(request.form.get("citizen", ""))
        if citizen is None:
            return page_error("Personne inconnue du bac à sable.")
        return consent_page(req, citizen)

    @bp.post("/franceconnect/interaction/consent")
    def consent():
        req = provider.read_interaction(request.form.get("interaction"))
        if req is None:
            return page_error("Cette page a expiré : recommencez la connexion depuis le service.")
        if request.form.get("decision") != "accept":
            return back_to_client(req, error="access_denied",
                                  error_description="L'usager a refusé de transmettre ses données.")
        try:
            code = provider.consent(req, request.form.get("citizen", ""), request.form.getlist("scope"))
        except AuthorizeError as error:
            return page_error(error.description)
        return back_to_client(req, code=code)

    # --- token, userinfo, logout ------------------------------------------------------------------
    @bp.post(PREFIX + "/token")
    def token():
        try:
            answer = provider.redeem(request.form, request.headers.get("Authorization"), issuer(), _try_it_ttl())
        except TokenError as error:
            headers = {"WWW-Authenticate": 'Basic realm="franceconnect"'} if error.status == 401 else {}
            return jsonify(error=error.error, error_description=error.description), error.status, headers
        return jsonify(answer)

    @bp.route(PREFIX + "/userinfo", methods=["GET", "POST"])
    def userinfo():
        header = request.headers.get("Authorization", "")
        value = header[7:].strip() if header[:7].lower() == "bearer " else request.form.get("access_token", "")
        signed = provider.userinfo(value, issuer())
        if signed is None:
            return jsonify(error="invalid_token", error_description="Jeton d'accès invalide ou expiré."), 401, {
                "WWW-Authenticate": 'Bearer error="invalid_token"'}
        return Response(signed, 200, content_type="application/jwt; charset=utf-8")

    @bp.get(PREFIX + "/session/end")
    def end_session():
        target, problem = provider.end_session(request.args, request.host_url)
        if problem:
            return page_error(problem)
        if target:
            return redirect(_with_query(target, {"state": request.args.get("state")}), 302)
        return render_template("franceconnect/logged_out.html")

    # --- for people and pipelines -----------------------------------------------------------------
    @bp.get("/franceconnect/personas")
    def personas():
        directory = provider.personas.current()
        return jsonify({"households": [
            {"label": h.label, "others": [{"name": n, "birthdate": b} for n, b in h.others],
             "personas": [{"id": c.id, "token": c.token, "description": c.description, "identity": c.identity,
                           "answers": [{k: a[k] for k in ("path", "version", "status", "case")} for a in c.answers]}
                          for c in h.citizens]}
            for h in directory.households]})

    def _try_it_ttl():
        """The lifetime the "try it" page asks for its own logins (redirected to its callback)."""
        asked = request.form.get("sandbox_ttl")
        if asked is None:
            return None
        if urlsplit(request.form.get("redirect_uri") or "").path != TRY_IT_CALLBACK:
            raise TokenError("invalid_request", "sandbox_ttl n'est accepté que pour la page « essayer » du bac à sable.")
        if not asked.isdigit() or not 1 <= int(asked) <= TRY_IT_MAX_TTL:
            raise TokenError("invalid_request", f"sandbox_ttl : un nombre de secondes de 1 à {TRY_IT_MAX_TTL}.")
        return int(asked)

    @bp.get(TRY_IT_CALLBACK)
    def try_it_callback():
        return render_template("franceconnect/callback.html")

    @bp.get("/franceconnect/essayer/config")
    def try_it_config():
        """What the "try it" page's FranceConnect button needs: the routes and their scopes."""
        routes, scopes = [], set()
        for op in sandbox.operations.values():
            if op.france_connect:
                entry = sandbox.catalogue.get(op.operation_id)
                routes.append(op.path)
                scopes |= set(entry.scopes) if entry else set()
        return jsonify({"authorize": PREFIX + "/authorize", "token": PREFIX + "/token", "client_id": "sandbox",
                        "client_secret": "sandbox", "scope": " ".join(["openid", "identite_pivot", *sorted(scopes)]),
                        "acr_values": ACR, "routes": sorted(routes),
                        "ttl": TRY_IT_MAX_TTL, "api_ttl": provider.ttl})

    return bp
