"""Retired routes on the documentation pages: marked retired, listed last, their cases shown with
the 410 they answer (production/retired.py; `--serve-retired` keeps the CAF v1 route served)."""
from __future__ import annotations

import html as html_module
import re

import pytest
import yaml

from .conftest import token_for, v2_headers

RETIRED_PATH = "/api/v2/composition-familiale"
RETIRED_OP = "api_particulier_v2_cnaf_quotient_familial"


def _sections(html: str) -> list:
    """[(operation id, section html)] in page order."""
    return re.findall(r'<section class="sbx-operation[^"]*" id="([^"]+)">(.*?)</section>', html, re.S)


def test_the_catalogue_lists_retired_routes_last_with_the_410_they_answer(app):
    client = app.test_client()
    html = client.get("/docs/personas").get_data(as_text=True)
    sections = _sections(html)
    ids = [op_id for op_id, _ in sections]
    assert ids[0] != RETIRED_OP, "the page no longer opens on a retired route"
    retired = dict(sections)[RETIRED_OP]
    assert ids.index(RETIRED_OP) > max(i for i, (op_id, body) in enumerate(sections) if "Route retirée" not in body)
    assert "Route retirée" in retired and "L'API Quotient Familial v1 n'est plus disponible" in html_module.unescape(retired)
    statuses = re.findall(r'<tr class="sbx-case" data-status="(\d+)">', retired)
    assert len(statuses) > 20 and set(statuses) == {"410"}
    assert "Essayer dans la console" not in retired and "sbx-clone" not in retired
    # what the row says is what the route answers
    curl = re.search(r'<pre class="sbx-curl"><code>curl -H &#34;X-Api-Key: \$TOKEN&#34; &#34;http://localhost(.*?)&#34;</code>',
                     retired).group(1)
    assert client.get(curl.replace("&amp;", "&"), headers=v2_headers(token_for())).status_code == 410
    # the table of contents too: retired last, and saying so
    toc = re.search(r'<nav class="sbx-toc">(.*?)</nav>', html, re.S).group(1)
    entries = re.findall(r"<li( class=\"sbx-retired\")?><a href=\"#([^\"]+)\">", toc)
    assert entries[-1] == (' class="sbx-retired"', RETIRED_OP)
    assert [op_id for _, op_id in entries] == ids
    # the other sections keep their cases' own statuses and links
    live = dict(sections)["api_particulier_v2_pole_emploi_statut"]
    assert "Route retirée" not in live and 'data-status="200"' in live and "Essayer dans la console" in live


def test_with_serve_retired_the_catalogue_says_the_route_is_served_here(make_app):
    client = make_app(serve_retired=True).test_client()
    retired = dict(_sections(client.get("/docs/personas").get_data(as_text=True)))[RETIRED_OP]
    assert "Route retirée" in retired and "--serve-retired" in retired
    assert 'data-status="200"' in retired and "Essayer dans la console" in retired


def test_the_try_it_page_marks_retired_routes_and_shows_their_sections_last(app):
    spec = yaml.safe_load(app.test_client().get("/openapi.yml").get_data())
    op = spec["paths"][RETIRED_PATH]["get"]
    assert op["deprecated"] is True and op["summary"].startswith("Route retirée")
    assert "410" in op["description"] and "n'est plus disponible" in op["description"]
    gone = [p for p in spec["paths"] if p in (RETIRED_PATH, "/api/v2/avis-imposition")]
    assert list(spec["paths"])[-len(gone):] == gone, "retired routes come after the others"
    tags = [t["name"] for t in spec["tags"]]
    assert tags[-2:] == ["v2 CNAF", "v2 DGFiP"]
    assert all(t["description"].startswith("Retirée") for t in spec["tags"][-2:])
    live = spec["paths"]["/api/v2/situations-pole-emploi"]["get"]
    assert not live["summary"].startswith("Route retirée")


@pytest.mark.parametrize("serve_retired", [False, True])
def test_the_loaded_spec_keeps_its_own_order(make_app, serve_retired):
    app = make_app(serve_retired=serve_retired)
    document = app.extensions["sandbox"].specs.document
    assert not document["paths"][RETIRED_PATH]["get"]["summary"].startswith("Route retirée")
    assert [t["name"] for t in document["tags"]][1] == "v2 CNAF"
