"""The first hour of a newcomer, in a real browser (headless Chromium) against real gunicorn.

A browser app on another loopback origin calls v2 and v3 (CORS); the catalogue lists retired
routes last with their 410 and the "Cloner" dialog fits and warns; the try-it page is French, its
FranceConnect login gives an hour-long token shown in French, the ANTS FranceConnect route comes
pre-filled; a broken fixture edit shows in the answers' headers. Screenshots go to
test-artifacts/first-hour-*.png.
"""
from __future__ import annotations

import base64
import functools
import json
import re
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from .conftest import ARTIFACTS, RECIPIENT, token_for
from .test_docs import write_fixtures
from .test_docs_browser import _click, _execute, _operation, _visible, _wait, browser  # noqa: F401

pytestmark = pytest.mark.slow

APP_PAGE = """<!doctype html>
<html lang="fr"><head><meta charset="utf-8"><title>Une application de démarche</title></head>
<body><h1>Une démarche en ligne qui appelle le bac à sable</h1>
<p>v2 : <code id="v2">…</code></p><p>v3 : <code id="v3">…</code></p>
<script>
  var given = JSON.parse(decodeURIComponent(location.hash.slice(1)));
  function call(id, path, headers) {
    fetch(given.sandbox + path, { headers: headers }).then(function (response) {
      return response.json().then(function (body) {
        document.getElementById(id).textContent = JSON.stringify({
          status: response.status, remaining: response.headers.get("RateLimit-Remaining"),
          requestId: response.headers.get("X-Request-ID"), body: body });
      });
    }).catch(function (error) { document.getElementById(id).textContent = "refusé : " + error; });
  }
  call("v2", "/api/v2/situations-pole-emploi?identifiant=default", { "X-Api-Key": given.token });
  call("v3", "/v3/france_travail/statut/identifiant?identifiant=default&recipient=" + given.recipient,
       { "Authorization": "Bearer " + given.token });
</script></body></html>
"""


@pytest.fixture
def app_origins(tmp_path):
    """Two loopback origins serving the same browser app: (allowed URL, refused URL)."""
    folder = tmp_path / "app"
    folder.mkdir()
    (folder / "index.html").write_text(APP_PAGE)
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), handler) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield [f"http://127.0.0.1:{s.server_address[1]}" for s in servers]
    for server in servers:
        server.shutdown()
        server.server_close()


def _shot(driver, name):
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"first-hour-{name}.png"))


def _text_of(driver, css):
    from selenium.webdriver.common.by import By
    return driver.find_element(By.CSS_SELECTOR, css).text


def test_a_browser_app_on_another_origin_calls_v2_and_v3(start_server, browser, app_origins):
    allowed, refused = app_origins
    server = start_server("--workers", "1", env={"SANDBOX_CORS_ORIGINS": allowed})
    given = json.dumps({"sandbox": server.url, "token": token_for(), "recipient": RECIPIENT})

    browser.get(f"{allowed}/index.html#{given}")
    _wait(browser, lambda d: "…" not in _text_of(d, "#v2") + _text_of(d, "#v3"), "the calls never finished")
    _shot(browser, "cors-allowed")
    for call, nom_key in (("#v2", "nom"), ("#v3", "data")):
        seen = json.loads(_text_of(browser, call))
        assert seen["status"] == 200, seen
        assert seen["remaining"] is not None and seen["requestId"], "exposed headers are readable"
        assert nom_key in seen["body"]

    browser.get(f"{refused}/index.html#{given}")
    _wait(browser, lambda d: "…" not in _text_of(d, "#v2") + _text_of(d, "#v3"), "the calls never finished")
    _shot(browser, "cors-refused")
    assert _text_of(browser, "#v2").startswith("refusé : TypeError")
    assert _text_of(browser, "#v3").startswith("refusé : TypeError")
    assert "Traceback" not in server.output()


def test_the_catalogue_lists_retired_routes_last_and_the_clone_dialog_fits_and_warns(start_server, browser):
    from selenium.webdriver.common.by import By

    server = start_server("--workers", "1")
    # a global persona that expires: its expiry is shown in French
    catalogue = requests.get(server.url + "/sandbox/personas", timeout=10).json()["operations"]
    job_seekers = next(op for op in catalogue if op["operation_id"] == "api_particulier_v2_pole_emploi_statut")
    like = f"api_particulier_v2_pole_emploi_statut/{job_seekers['cases'][0]['file']}"
    created = requests.post(server.url + "/sandbox/personas", headers={"X-Api-Key": token_for()}, timeout=10, json={
        "like": like, "params": {"identifiant": "expire.bientot"}, "global": True, "ttl": 600})
    assert created.status_code == 201, created.text
    browser.get(server.url + "/docs/personas")
    expiry = _visible(browser, ".sbx-runtime time")
    assert re.fullmatch(r"\d{2}/\d{2}/\d{4} \d{2}:\d{2}:\d{2}", expiry.text), expiry.text
    sections = browser.find_elements(By.CSS_SELECTOR, "section.sbx-operation")
    assert "Route retirée" not in sections[0].text, "the page opens on a route that answers"
    retired = browser.find_element(By.ID, "api_particulier_v2_cnaf_quotient_familial")
    assert sections[-1] == retired and "Route retirée" in retired.text
    statuses = {s.text for s in retired.find_elements(By.CSS_SELECTOR, "tr.sbx-case .sbx-status")}
    assert statuses == {"410"}
    assert not retired.find_elements(By.CSS_SELECTOR, "a.sbx-try")
    toc = browser.find_elements(By.CSS_SELECTOR, ".sbx-toc li")
    assert "retirée" in toc[-1].text and "retirée" not in toc[0].text
    browser.execute_script("arguments[0].scrollIntoView({block: 'start'});", retired)
    _shot(browser, "catalogue-retired")

    # the "Cloner" dialog of a case with a long name: the title wraps inside the dialog
    long_case = browser.find_element(
        By.CSS_SELECTOR, "#api_particulier_v3_cnav_participation_familiale_eaje_with_france_connect .sbx-clone")
    _click(browser, long_case)
    dialog = _visible(browser, "#clone-dialog")
    _wait(browser, lambda d: d.find_element(By.ID, "clone-params").get_attribute("value"), "the case never loaded")
    title = browser.find_element(By.CSS_SELECTOR, "#clone-dialog h2")
    assert browser.execute_script("return arguments[0].scrollWidth <= arguments[0].clientWidth", title), "title overflows"
    assert browser.execute_script("return arguments[0].scrollWidth <= arguments[0].clientWidth", dialog)
    warning = browser.find_element(By.ID, "clone-same")
    assert warning.is_displayed() and "Mêmes paramètres que le cas d'origine" in warning.text
    _shot(browser, "clone-same-params")
    params = browser.find_element(By.ID, "clone-params")
    changed = json.loads(params.get_attribute("value"))
    changed["nomNaissance"] = "CLONE"
    params.clear()
    params.send_keys(json.dumps(changed))
    _wait(browser, lambda d: not warning.is_displayed(), "the warning stays with other params")


def test_the_try_it_page_in_french_with_an_hour_long_franceconnect_token(start_server, browser):
    from selenium.webdriver.common.by import By

    server = start_server("--workers", "1")
    browser.get(server.url + "/docs")
    _visible(browser, ".swagger-ui .information-container")

    # sections and routes described in French; retired sections last
    tags = [h.get_attribute("data-tag") for h in browser.find_elements(By.CSS_SELECTOR, "h3[data-tag]")]
    assert tags[-2:] == ["v2 CNAF", "v2 DGFiP"] and "Jeton" in tags and "Bac à sable" in tags
    assert "Immatriculation des véhicules" in _text_of(browser, 'h3[data-tag="ANTS"]')
    block = _operation(browser, "DSS (CNAF & MSA)", "/v3/dss/quotient_familial/identite")
    assert "Quotient familial (CAF ou MSA) et foyer, par l'état civil" in _text_of(browser, block + " .opblock-summary")
    # production requires neither sexeEtatCivil nor prenoms[] there (item 7)
    for name in ("sexeEtatCivil", "prenoms[]", "nomNaissance"):
        row = browser.find_element(By.CSS_SELECTOR, f'{block} tr[data-param-name="{name}"]')
        required = bool(row.find_elements(By.CSS_SELECTOR, ".parameter__name.required"))
        assert required == (name == "nomNaissance"), name
    assert "Sexe à l'état civil, s'il est connu." in browser.find_element(
        By.CSS_SELECTOR, f'{block} tr[data-param-name="sexeEtatCivil"]').text
    _shot(browser, "try-it-french")

    # the ANTS FranceConnect route comes with its plate number
    ants = _operation(browser, "ANTS", "/v3/ants/extrait_immatriculation_vehicule/france_connect")
    _click(browser, browser.find_element(By.CSS_SELECTOR, f"{ants} .try-out__btn"))
    plate = browser.find_element(By.CSS_SELECTOR, f'{ants} tr[data-param-name="immatriculation"] input')
    assert re.fullmatch(r"[A-Z]{2}-\d{3}-[A-Z]{2}", plate.get_attribute("value"))

    # FranceConnect login: an hour on this page, said so, and the time in French
    browser.execute_script("window.scrollTo(0, 0)")
    button = _visible(browser, "#franceconnect-button")
    _wait(browser, lambda d: button.is_enabled(), "the FranceConnect button never became usable")
    lifetime = _visible(browser, "#franceconnect-lifetime")
    assert "1 h" in lifetime.text and "60 s" in lifetime.text
    docs_window = browser.current_window_handle
    button.click()
    _wait(browser, lambda d: len(d.window_handles) == 2, "no FranceConnect window opened")
    browser.switch_to.window([h for h in browser.window_handles if h != docs_window][0])
    _visible(browser, '.fc-card[data-citizen="cnaf_parent_isole"]')
    browser.execute_script("document.querySelector('.fc-card[data-citizen=\"cnaf_parent_isole\"] button').click()")
    _click(browser, _visible(browser, "#fc-accept"))
    _wait(browser, lambda d: len(d.window_handles) == 1, "the FranceConnect window did not close")
    browser.switch_to.window(docs_window)
    status = _visible(browser, "#franceconnect-status")
    _wait(browser, lambda d: "Connecté" in status.text, "the page never got the access token")
    assert re.search(r"jusqu'au \d{2}/\d{2}/\d{4} \d{2}:\d{2}:\d{2}", status.text), status.text
    token = status.get_attribute("data-token")
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert claims["exp"] - claims["iat"] == 3600
    answer = requests.get(f"{server.url}/v3/dss/quotient_familial/france_connect", params={"recipient": RECIPIENT},
                          headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert answer.status_code == 200
    _shot(browser, "franceconnect-hour")


def test_a_broken_fixture_edit_shows_in_the_answers_the_page_gets(start_server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    fixtures = write_fixtures(tmp_path / "fixtures")
    server = start_server("--fixtures", str(fixtures), "--workers", "1", env={"SANDBOX_RELOAD_INTERVAL": "0.2"})
    broken = next((fixtures / "api_particulier_v2_pole_emploi_statut").glob("*.yaml"))
    broken.write_text("params: {identifiant: camille.essai\nstatus: 200\n")
    deadline = time.time() + 15
    while "X-Sandbox-Fixtures-Stale" not in requests.get(server.url + "/api/ping", timeout=5).headers:
        assert time.time() < deadline, "the broken edit was never noticed"
        time.sleep(0.2)

    browser.get(server.url + "/docs")
    _click(browser, _visible(browser, "#get-token"))
    _visible(browser, "#token-result")
    block = _operation(browser, "v2 France Travail", "/api/v2/situations-pole-emploi")
    _click(browser, browser.find_element(By.CSS_SELECTOR, f"{block} .try-out__btn"))
    field = browser.find_element(By.CSS_SELECTOR, f'{block} tr[data-param-name="identifiant"] input')
    field.clear()
    field.send_keys("camille.essai")
    status, body, _ = _execute(browser, block)
    assert status == 200, "the last good set keeps answering"
    headers = browser.find_element(By.CSS_SELECTOR, f"{block} .live-responses-table").text
    assert f"x-sandbox-fixtures-stale: {broken}: $: not valid YAML: line 2" in headers, headers
    browser.execute_script("arguments[0].scrollIntoView({block: 'start'});",
                           browser.find_element(By.CSS_SELECTOR, f"{block} .live-responses-table"))
    _shot(browser, "stale-header")
    status_page = requests.get(server.url + "/sandbox/status", timeout=5).json()["fixtures"]
    assert status_page["up_to_date"] is False and broken.name in status_page["stale"][0]
