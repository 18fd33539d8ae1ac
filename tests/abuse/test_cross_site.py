"""No other site can write to the sandbox through its visitors' browsers.

A page served from another loopback port (another origin) runs in headless Chromium what a
hostile site would: `fetch` in no-cors mode with a text/plain body and `?token=`, a CORS fetch
with a JSON body and the token in a header (stopped by the preflight), and two auto-submitted
forms (one with the JSON-in-text/plain trick). Nothing is created: no persona for the token the
page carries, no token minted; the attempts did reach the sandbox (its /metrics counts them); a
bystander's answers are the same before and after.
"""
from __future__ import annotations

import http.server
import json
import threading

import pytest
import requests

from ..conftest import RECIPIENT, token_for, v2_headers, v3_headers
from ..test_docs_browser import _wait, browser  # noqa: F401 - the headless Chromium fixture
from ..test_metrics import samples, value

pytestmark = pytest.mark.slow
V3_ROUTE = "/v3/france_travail/statut/identifiant"
V3_DEFAULT = "api_particulier_v3_france_travail_statut_with_identifiant/200_default.yaml"

PAGE = """<!doctype html>
<html><head><title>loading</title></head><body>
<iframe name="sink1"></iframe><iframe name="sink2"></iframe>
<form id="persona" method="post" enctype="text/plain" target="sink1" action="{sandbox}/sandbox/personas?token={token}">
  <input name='{form_name}' value='{form_value}'>
</form>
<form id="mint" method="post" target="sink2" action="{sandbox}/sandbox/tokens">
  <input name="ttl" value="60">
</form>
<script>
const sandbox = {sandbox_json}, token = {token_json}, persona = {persona_json};
const attempts = [
  fetch(sandbox + "/sandbox/personas?token=" + token,
        {{method: "POST", mode: "no-cors", headers: {{"Content-Type": "text/plain"}}, body: persona}}),
  fetch(sandbox + "/sandbox/tokens",
        {{method: "POST", mode: "no-cors", headers: {{"Content-Type": "text/plain"}}, body: '{{"ttl": 60}}'}}),
  fetch(sandbox + "/sandbox/personas",
        {{method: "POST", headers: {{"Content-Type": "application/json", "X-Api-Key": token}}, body: persona}}),
];
Promise.allSettled(attempts).then(function (results) {{
  let loaded = 0;
  for (const name of ["sink1", "sink2"]) {{
    document.querySelector("iframe[name=" + name + "]").addEventListener("load", function () {{
      loaded += 1;
      if (loaded === 2) {{ document.title = "done " + results.map(r => r.status).join(","); }}
    }});
  }}
  document.getElementById("persona").submit();
  document.getElementById("mint").submit();
}});
</script></body></html>
"""


@pytest.fixture
def hostile_site():
    """Serves one page on a loopback port of its own: another origin than the sandbox's."""
    pages = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            body = pages.get(self.path, "").encode()
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield pages, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def bystander_sees(url, token):
    got = requests.get(url + V3_ROUTE, params={"identifiant": "default", "recipient": RECIPIENT},
                       headers=v3_headers(token), timeout=10)
    return got.status_code, got.headers.get("X-Sandbox-Case"), got.json()


def test_a_page_of_another_site_creates_nothing(start_server, hostile_site, browser):  # noqa: F811
    sandbox = start_server(env={"SANDBOX_IP_RATE_LIMIT": "off"})
    pages, site = hostile_site
    attacker, bystander = token_for(), token_for()
    before = bystander_sees(sandbox.url, bystander)
    assert before[:2] == (200, V3_DEFAULT)

    persona = {"like": V3_DEFAULT, "global": True, "status": 503,
               "payload": {"errors": [{"code": "37999", "title": "x", "detail": "x", "meta": {}}]}}
    text = json.dumps(persona)
    # the text/plain form sends `name=value`: the name opens the JSON, the value closes it
    form_name, form_value = text[:-1] + ', "pad": "', '"}'
    pages["/"] = PAGE.format(sandbox=sandbox.url, token=attacker, sandbox_json=json.dumps(sandbox.url),
                             token_json=json.dumps(attacker), persona_json=json.dumps(text),
                             form_name=form_name.replace("'", "&#39;"), form_value=form_value)
    browser.get(site + "/")
    _wait(browser, lambda d: d.title.startswith("done"), "the hostile page never finished its attempts")
    # the no-cors fetches go out (their answers are opaque); the CORS one fails at its preflight
    assert browser.title == "done fulfilled,fulfilled,rejected", browser.title

    mine = requests.get(sandbox.url + "/sandbox/personas", headers=v2_headers(attacker), timeout=10).json()
    assert not [c for op in mine["operations"] for c in op["cases"] if c.get("runtime")], "a persona was created"
    assert bystander_sees(sandbox.url, bystander) == before

    scraped = samples(requests.get(sandbox.url + "/metrics", timeout=10).text)
    assert value(scraped, "sandbox_tokens_minted_total") == 0, "a token was minted"
    # the attempts reached the sandbox and were refused: ?token= on a write (401), a form or text/plain (415)
    assert value(scraped, "sandbox_calls_total", method="POST", route="/sandbox/personas", status="401") == 2
    assert value(scraped, "sandbox_calls_total", method="POST", route="/sandbox/tokens", status="415") == 2
    assert value(scraped, "sandbox_refusals_total", reason="token_in_query") == 2
    assert value(scraped, "sandbox_calls_total", method="POST", route="/sandbox/personas", status="201") == 0
