"""The documentation pages: /docs (Swagger UI) and /docs/personas.

What a user relies on: the page and everything it loads come from the sandbox (it works
offline, nothing leaks to a CDN), a CSP says so to the browser, the console shows the spec the
sandbox serves, and the persona catalogue gives curl lines that work as printed.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests
import yaml
from markupsafe import escape

from .conftest import RECIPIENT, require, token_for, v2_headers
from sandbox.settings import BUNDLED_SPEC

V2_OPERATION = "api_particulier_v2_pole_emploi_statut"
V3_OPERATION = "api_particulier_v3_france_travail_statut_with_identifiant"
V2_ARRAY_OPERATION = "api_particulier_v2_cnav_allocation_adulte_handicape"

V2_PAYLOAD = {
    "identifiant": "camille.essai", "civilite": "MME", "nom": "DUPONT-ESSAI", "nomUsage": None,
    "prenom": "CAMILLE", "sexe": "FEMININ", "dateNaissance": "1990-04-12", "codeCertificationCNAV": "VC",
    "telephone": "0102030405", "telephone2": None, "email": "camille.essai@example.org",
    "adresse": {"codePostal": "75001", "INSEECommune": "75101", "localite": "75001 PARIS",
                "ligneVoie": "1 RUE DE L'ESSAI", "ligneComplementDestinataire": None,
                "ligneComplementAdresse": None, "ligneComplementDistribution": None,
                "ligneNom": "MME CAMILLE DUPONT-ESSAI"},
    "dateInscription": "2023-01-02", "dateCessationInscription": None, "codeCategorieInscription": 1,
    "libelleCategorieInscription": "PERSONNE SANS EMPLOI DISPONIBLE DUREE INDETERMINEE PLEIN TPS",
}
V3_PAYLOAD = {
    "data": {
        "identifiant": "dominique.v3",
        "identite": {"civilite": "M.", "nom_naissance": "TESTEUR-TROIS", "nom_usage": None,
                     "prenom": "DOMINIQUE", "sexe": "MASCULIN", "date_naissance": "1985-07-14"},
        "contact": {"telephone": "0607080910", "telephone2": None, "email": None},
        "adresse": {"code_postal": "69008", "code_cog_insee_commune": "69388", "localite": "69008 LYON",
                    "ligne_voie": "2 AVENUE DU TEST", "ligne_complement_destinataire": None,
                    "ligne_complement_adresse": None, "ligne_complement_distribution": None,
                    "ligne_nom": "M DOMINIQUE TESTEUR-TROIS"},
        "inscription": {"date_debut": "2022-03-01", "date_fin": None,
                        "categorie": {"code": 2,
                                      "libelle": "PERSONNE SANS EMPLOI DISPONIBLE DUREE INDETERMINEE PARTIEL"},
                        "code_certification_cnav": "VC"},
    },
    "links": {},
    "meta": {},
}
# A case with array parameters: its curl line must send prenoms[]=A&prenoms[]=B.
ARRAY_CASE_PARAMS = {"nomNaissance": "ESSAI", "prenoms": ["JEAN", "PAUL"], "anneeDateDeNaissance": 1980,
                     "moisDateDeNaissance": 5, "jourDateDeNaissance": 17, "sexe": "M",
                     "codeInseeLieuDeNaissance": "75115", "codePaysLieuDeNaissance": "99100"}
ARRAY_CASE_PAYLOAD = {"error": "not_found", "reason": "Dossier allocataire inexistant.",
                      "message": "Dossier allocataire inexistant. Le document ne peut être édité."}


def write_fixtures(root: Path) -> Path:
    """A small fixture folder of our own (the bundled one is being written by others)."""
    cases = {
        V2_OPERATION: ("200_camille.yaml", "Camille Dupont-Essai, inscrite en catégorie 1",
                       {"identifiant": "camille.essai"}, 200, V2_PAYLOAD),
        V3_OPERATION: ("200_dominique.yaml", "Dominique Testeur, inscrit en catégorie 2",
                       {"identifiant": "dominique.v3"}, 200, V3_PAYLOAD),
        V2_ARRAY_OPERATION: ("404_jean_paul.yaml", "Jean Paul Essai, inconnu de la CAF",
                             ARRAY_CASE_PARAMS, 404, ARRAY_CASE_PAYLOAD),
    }
    for operation, (name, description, params, status, payload) in cases.items():
        folder = root / operation
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(yaml.safe_dump({"description": description, "params": params,
                                                   "status": status, "payload": payload},
                                                  allow_unicode=True, sort_keys=False))
    return root


@pytest.fixture
def fixtures_dir(tmp_path):
    return write_fixtures(tmp_path / "fixtures")


@pytest.fixture
def docs_client(make_app, fixtures_dir):
    return make_app(fixtures=(fixtures_dir,)).test_client()


# ---- what the pages load -------------------------------------------------------------------

class Links(HTMLParser):
    """src/href of the page, and its <script> elements (attributes and text)."""

    def __init__(self):
        super().__init__()
        self.refs, self.scripts, self._script = [], [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in ("src", "href"):
            if attrs.get(name):
                self.refs.append((tag, attrs.get("rel"), attrs[name]))
        if tag == "script":
            self._script = {"attrs": attrs, "text": ""}
            self.scripts.append(self._script)

    def handle_data(self, data):
        if self._script is not None:
            self._script["text"] += data

    def handle_endtag(self, tag):
        if tag == "script":
            self._script = None


def parse(html: str) -> Links:
    links = Links()
    links.feed(html)
    return links


URL = re.compile(r"""(?i)\bhttps?://([^/\s"'`<>()\\:?#$]+)""")
# Hosts named inside the two vendored Swagger UI files the page loads, each with why the
# browser never contacts it. Any other host there, or ANY foreign host in the sandbox's own
# HTML/JS/CSS, fails. (At run time the browser test checks that every resource the page
# loaded came from the sandbox, and the CSP's 'self' makes the browser refuse anything else.)
VENDORED_INERT_HOSTS = {
    # swagger-ui.css and swagger-ui-bundle.js
    "www.w3.org": "xmlns names of the inline SVG icons: identifiers, not fetched",
    # swagger-ui-bundle.js only
    "datatracker.ietf.org": "RFC references inside the text of its ABNF grammars",
    "www.rfc-editor.org": "RFC and errata references inside the text of its ABNF grammars",
    "json-schema.org": "JSON Schema dialect ids ($schema values compared as strings)",
    "spec.openapis.org": "OpenAPI 3.1/3.2 dialect and schema ids compared as strings",
    "github.com": "highlight.js deprecation messages and core-js's license notice",
    "fb.me": "text of a React error message",
    "reactjs.org": "React's error-decoder link, text of production error messages",
    "redux.js.org": "Redux's error link, text of production error messages",
    "validator.swagger.io": "the default validatorUrl: the page sets validatorUrl null (asserted here)",
    "swagger.io": "a dummy base to resolve relative $refs against; stripped from the result",
    "base": "sanitizeUrl's dummy base (https://base<random>) to parse a relative URL",
    "vladimirgorej.com": "a dummy base to test whether a server URL parses",
    "example.com": "sample values generated for format: uri / uri-template",
    "실례.com": "sample value generated for format: iri",
    "spdx.org": "link built from an API's license identifier; our spec has none",
    "twitter.com": "Autolinker's hashtag/mention link builders (links a user may click, not loads)",
    "www.facebook.com": "Autolinker's hashtag link builder",
    "instagram.com": "Autolinker's hashtag/mention link builders",
    "www.tiktok.com": "Autolinker's hashtag/mention link builders",
    "soundcloud.com": "Autolinker's mention link builder",
}
VENDORED = {"/docs/swagger-ui/swagger-ui-bundle.js", "/docs/swagger-ui/swagger-ui.css"}


def foreign_hosts(text: str, own_host: str) -> set:
    return {m.group(1).lower() for m in URL.finditer(text)} - {own_host.lower()}


@pytest.mark.slow
def test_the_page_and_everything_it_loads_come_from_the_sandbox(start_server, fixtures_dir):
    server = start_server("--fixtures", str(fixtures_dir), "--workers", "1")
    own_host = urlsplit(server.url).hostname
    page = requests.get(server.url + "/docs", timeout=10)
    assert page.status_code == 200
    assert "text/html" in page.headers["Content-Type"]
    assert foreign_hosts(page.text, own_host) == set(), "the page's own HTML names another host"

    links = parse(page.text)
    fetched = {}
    for tag, rel, ref in links.refs:
        url = urljoin(server.url + "/docs", ref)
        assert urlsplit(url).netloc == urlsplit(server.url).netloc, f"<{tag}> loads {ref} from elsewhere"
        if tag == "a":
            continue  # navigation, not something the page loads
        answer = requests.get(url, timeout=10)
        assert answer.status_code == 200, ref
        fetched[urlsplit(url).path] = answer
    # The page loads Swagger UI's script and style, and the sandbox's own script and style.
    assert {"/docs/swagger-ui/swagger-ui-bundle.js", "/docs/swagger-ui/swagger-ui.css",
            "/docs/static/docs.js", "/docs/static/docs.css"} <= set(fetched)

    for path, answer in fetched.items():
        if not answer.headers["Content-Type"].startswith(("text/", "application/javascript")):
            continue
        hosts = foreign_hosts(answer.text, own_host)
        if path in VENDORED:
            assert hosts - set(VENDORED_INERT_HOSTS) == set(), f"{path} names a host nobody vetted"
        else:
            assert hosts == set(), f"{path} (the sandbox's own file) names another host"
        if path.endswith(".css"):
            # CSS that loads something: url() and @import only ever point at data: here.
            assert "@import" not in answer.text
            for target in re.findall(r"url\(\s*['\"]?([^'\")]+)", answer.text):
                assert target.startswith("data:"), f"{path} loads {target[:60]}"

    # The Swagger UI configuration: the sandbox's spec, and no validator badge (whose default
    # would send the spec to validator.swagger.io).
    config = json.loads(next(s["text"] for s in links.scripts if s["attrs"].get("id") == "docs-config"))
    assert config["url"] == "/openapi.yml"
    assert config["validatorUrl"] is None


def test_every_docs_answer_carries_a_self_only_csp(docs_client):
    for path in ("/docs", "/docs/personas", "/docs/static/docs.js", "/docs/static/docs.css",
                 "/docs/swagger-ui/swagger-ui-bundle.js"):
        answer = docs_client.get(path)
        assert answer.status_code == 200, path
        policy = answer.headers.get("Content-Security-Policy")
        assert policy, f"{path} has no CSP"
        directives = {d.split()[0]: d.split()[1:] for d in policy.split(";") if d.strip()}
        assert directives["default-src"] == ["'self'"]
        assert directives["script-src"] == ["'self'"], "scripts: the sandbox's files only, nothing inline"
        assert directives["connect-src"] == ["'self'"], "the console may only call the sandbox"
        assert directives["object-src"] == ["'none'"]
        for sources in directives.values():
            assert not any(s.startswith(("http:", "https:", "*")) or "://" in s for s in sources), policy


def test_the_page_has_no_inline_script_and_offers_the_token_control(docs_client):
    html = docs_client.get("/docs").get_data(as_text=True)
    links = parse(html)
    for script in links.scripts:
        # script-src 'self' would block inline code: only files and an inert JSON data block.
        assert script["attrs"].get("src") or script["attrs"].get("type") == "application/json", script
    assert 'id="get-token"' in html and "Obtenir un jeton" in html
    # Every scope is offered, ticked, with its one-line meaning from /sandbox/scopes.
    scopes = docs_client.get("/sandbox/scopes").get_json()["scopes"]
    boxes = re.findall(r'<input type="checkbox" name="scope" value="([^"]+)" checked>', html)
    assert sorted(boxes) == sorted(s["name"] for s in scopes)
    described = next(s for s in scopes if s["description"])
    assert str(escape(described["description"])) in html
    assert f"<legend>{escape(described['provider'])}</legend>" in html


def test_the_home_page_sends_the_browser_to_the_docs(docs_client):
    answer = docs_client.get("/")
    assert answer.status_code == 302
    assert urlsplit(answer.headers["Location"]).path == "/docs"
    assert docs_client.get("/", follow_redirects=True).status_code == 200


# The pages' own words are French (lang="fr"), as their users work: no English left in them.
ENGLISH_WORDS = re.compile(r"\b(the|token|try|all|none|of|valid|until|case|request|status|no|see|enter|with)\b", re.I)


class Text(HTMLParser):
    """The text a person reads on a page: no code, no script, no attribute."""

    def __init__(self):
        super().__init__()
        self.words, self._skip = [], 0

    def handle_starttag(self, tag, attrs):
        self._skip += tag in ("code", "pre", "script", "style", "small", "em", "legend", "label")

    def handle_endtag(self, tag):
        self._skip -= tag in ("code", "pre", "script", "style", "small", "em", "legend", "label")

    def handle_data(self, data):
        if not self._skip:
            self.words.append(data)


@pytest.mark.parametrize("page", ["/docs", "/docs/personas"])
def test_the_pages_own_text_is_french(docs_client, page):
    html = docs_client.get(page).get_data(as_text=True)
    assert '<html lang="fr">' in html
    parser = Text()
    parser.feed(html)
    text = " ".join(" ".join(parser.words).split())
    assert not ENGLISH_WORDS.findall(text), text


def test_only_swagger_ui_files_the_page_uses_are_served(docs_client):
    assert docs_client.get("/docs/swagger-ui/swagger-ui-bundle.js").status_code == 200
    # the standalone preset (its top bar loads a spec from any URL) and the dist's own index
    # page are not served
    assert docs_client.get("/docs/swagger-ui/swagger-ui-standalone-preset.js").status_code == 404
    assert docs_client.get("/docs/swagger-ui/index.html").status_code == 404
    assert docs_client.get("/docs/swagger-ui/..%2F__init__.py").status_code == 404


def test_openapi_yml_is_the_merged_spec_the_page_shows(make_app, fixtures_dir, tmp_path):
    extra = tmp_path / "extra.yml"
    extra.write_text(yaml.safe_dump({
        "openapi": "3.0.3", "info": {"title": "extra", "version": "1"}, "servers": [{"url": "https://elsewhere.test"}],
        "paths": {"/v5/essai/ping": {"get": {"operationId": "essaiPing", "security": [{"jwt_bearer_token": []}],
                                             "responses": {"200": {"description": "ok", "x-operationId": "essai_ping",
                                                                   "content": {"application/json": {"schema": {"type": "object"}}}}}}}},
    }))
    client = make_app(specs=(BUNDLED_SPEC, extra), fixtures=(fixtures_dir,)).test_client()
    page = client.get("/docs").get_data(as_text=True)
    config = json.loads(next(s["text"] for s in parse(page).scripts if s["attrs"].get("id") == "docs-config"))
    answer = client.get(config["url"])
    assert answer.status_code == 200
    spec = yaml.load(answer.get_data(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # 0.5 MB: C parser
    assert spec["servers"] == [{"url": "/"}], "Try it out must call this sandbox, not a spec's server"
    assert "/v5/essai/ping" in spec["paths"], "the second spec's routes are shown"
    assert "/api/v2/situations-pole-emploi" in spec["paths"] and "/v3/france_travail/statut/identifiant" in spec["paths"]
    # the schemes the token button authorises exist in what the page shows
    assert {"apiKey", "jwt_bearer_token", "franceConnectToken", "sandboxBearer"} <= set(spec["components"]["securitySchemes"])


# ---- the persona catalogue -----------------------------------------------------------------

class Cases(HTMLParser):
    """Rows of the persona page: status, description, curl line, try-it link."""

    def __init__(self):
        super().__init__()
        self.rows, self._in = [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        if tag == "tr" and "sbx-case" in classes:
            self.rows.append({"status": int(attrs["data-status"]), "curl": "", "description": ""})
        elif self.rows and tag == "pre" and "sbx-curl" in classes:
            self._in = "curl"
        elif self.rows and tag == "span" and "sbx-description" in classes:
            self._in = "description"
        elif self.rows and tag == "a" and "sbx-try" in classes:
            self.rows[-1]["try"] = attrs["href"]

    def handle_data(self, data):
        if self._in:
            self.rows[-1][self._in] += data

    def handle_endtag(self, tag):
        if tag in ("pre", "span"):
            self._in = None


def persona_rows(html: str) -> dict:
    parser = Cases()
    parser.feed(html)
    return {row["description"]: row for row in parser.rows}


def test_persona_page_lists_each_case_with_a_curl_line_and_a_try_link(docs_client):
    answer = docs_client.get("/docs/personas")
    assert answer.status_code == 200 and "text/html" in answer.headers["Content-Type"]
    rows = persona_rows(answer.get_data(as_text=True))
    catalogue = docs_client.get("/sandbox/personas").get_json()["operations"]
    assert set(rows) == {c["description"] for op in catalogue for c in op["cases"]}

    v2 = rows["Camille Dupont-Essai, inscrite en catégorie 1"]
    assert v2["status"] == 200
    assert v2["curl"] == ('curl -H "X-Api-Key: $TOKEN" '
                          '"http://localhost/api/v2/situations-pole-emploi?identifiant=camille.essai"')
    v3 = rows["Dominique Testeur, inscrit en catégorie 2"]
    assert v3["curl"] == ('curl -H "Authorization: Bearer $TOKEN" "http://localhost/v3/france_travail/statut/'
                          f'identifiant?recipient={RECIPIENT}&identifiant=dominique.v3"')
    arrays = rows["Jean Paul Essai, inconnu de la CAF"]
    assert arrays["status"] == 404
    assert "prenoms[]=JEAN&prenoms[]=PAUL" in arrays["curl"]
    assert arrays["curl"].startswith("curl -g "), "curl would read [] as a glob range"

    link = urlsplit(v3["try"])
    assert link.path == "/docs"
    query = parse_qs(link.query)
    assert query["operation"] == [V3_OPERATION]
    assert json.loads(query["params"][0]) == {"recipient": RECIPIENT, "identifiant": "dominique.v3"}
    assert json.loads(parse_qs(urlsplit(arrays["try"]).query)["params"][0])["prenoms[]"] == ["JEAN", "PAUL"]


@pytest.mark.slow
def test_the_curl_lines_work_as_printed(start_server, fixtures_dir):
    """Paste a line into a shell with TOKEN set: the case's own answer comes back."""
    curl = require("curl")
    server = start_server("--fixtures", str(fixtures_dir), "--workers", "1")
    rows = persona_rows(requests.get(server.url + "/docs/personas", timeout=10).text)
    expected = {"Camille Dupont-Essai, inscrite en catégorie 1": (200, V2_PAYLOAD),
                "Dominique Testeur, inscrit en catégorie 2": (200, V3_PAYLOAD),
                "Jean Paul Essai, inconnu de la CAF": (404, ARRAY_CASE_PAYLOAD)}
    env = {"PATH": os.environ.get("PATH", ""), "TOKEN": token_for()}
    for description, (status, payload) in expected.items():
        line = rows[description]["curl"]
        assert line.startswith("curl ") and server.url in line
        argv = shlex.split(line.replace("$TOKEN", env["TOKEN"]))  # what the shell would expand
        done = subprocess.run([curl, "-s", "-w", "\n%{http_code}", *argv[1:]], capture_output=True,
                              text=True, timeout=30, env=env)
        body, _, code = done.stdout.rpartition("\n")
        assert int(code) == status, (line, done.stdout, done.stderr)
        assert json.loads(body) == payload, line


# ---- CORS ----------------------------------------------------------------------------------

@pytest.mark.parametrize("origin", ["https://entreprise.api.gouv.fr", "https://staging.api.gouv.fr",
                                    "https://api.gouv.fr"])
def test_cors_lets_production_s_own_origins_in(docs_client, origin):
    """siade/config/initializers/cors.rb: production's API answers browsers from its own sites."""
    preflight = docs_client.options("/api/v2/situations-pole-emploi", headers={
        "Origin": origin, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "x-api-key"})
    assert preflight.status_code in (200, 204)
    assert preflight.headers["Access-Control-Allow-Origin"] == origin
    allowed = {h.strip().lower() for h in preflight.headers["Access-Control-Allow-Headers"].split(",")}
    assert "x-api-key" in allowed
    assert "GET" in preflight.headers["Access-Control-Allow-Methods"]

    actual = docs_client.get("/api/v2/situations-pole-emploi?identifiant=camille.essai",
                             headers={"Origin": origin, **v2_headers(token_for())})
    assert actual.status_code == 200
    assert actual.get_json() == V2_PAYLOAD
    assert actual.headers["Access-Control-Allow-Origin"] == origin
    assert actual.headers["Vary"] == "Origin"  # a cache must not hand one origin's answer to another
    assert "RateLimit-Remaining" in actual.headers["Access-Control-Expose-Headers"]


@pytest.mark.parametrize("origin", ["https://demarche.example.gouv.fr", "http://localhost:3000",
                                    "https://api.gouv.fr.example.com", "https://particulier.api.gouv.fr"])
def test_cors_refuses_a_browser_app_production_would_refuse(docs_client, origin):
    """A browser app elsewhere cannot call production's API: it cannot call the sandbox's either
    (the sandbox's own /docs page is same-origin and needs no CORS)."""
    for answer in (docs_client.options("/v3/france_travail/statut/identifiant", headers={
                       "Origin": origin, "Access-Control-Request-Method": "GET"}),
                   docs_client.get("/api/v2/situations-pole-emploi?identifiant=camille.essai",
                                   headers={"Origin": origin, **v2_headers(token_for())})):
        assert "Access-Control-Allow-Origin" not in answer.headers


def test_the_spec_is_open_to_every_origin(docs_client):
    """As production's /v*/openapi.yaml: any documentation page may load it."""
    answer = docs_client.get("/openapi.yml", headers={"Origin": "https://doc.example.org"})
    assert answer.headers["Access-Control-Allow-Origin"] in ("*", "https://doc.example.org")


def test_cors_origins_opens_the_api_to_a_hosted_documentation_page(make_app, fixtures_dir):
    client = make_app(fixtures=(fixtures_dir,), cors_origins="https://ok.example.fr").test_client()
    ok = client.get("/api/ping", headers={"Origin": "https://ok.example.fr"})
    assert ok.headers["Access-Control-Allow-Origin"] == "https://ok.example.fr"
    ok = client.get("/api/v2/situations-pole-emploi?identifiant=camille.essai",
                    headers={"Origin": "https://ok.example.fr", **v2_headers(token_for())})
    assert ok.headers["Access-Control-Allow-Origin"] == "https://ok.example.fr"
    other = client.get("/api/ping", headers={"Origin": "https://other.example.fr"})
    assert "Access-Control-Allow-Origin" not in other.headers
