"""The "try it" page end to end, as a user sees it: headless Chromium against a real gunicorn.

Get a token with the button, run a v2 route and a v3 route with "Try it out" / "Execute",
and see the fixture's payload in the response panel; then follow a persona's "try it" link.
A screenshot of the console goes to test-artifacts/docs-try-it.png.
"""
from __future__ import annotations

import json

import pytest
import requests

from .conftest import ARTIFACTS, RECIPIENT, require
from .test_docs import V2_PAYLOAD, V3_PAYLOAD, write_fixtures

pytestmark = pytest.mark.slow
WAIT = 30  # seconds; a shared 2-core CI machine can be slow to lay out Swagger UI
AUTHORISED_SCHEMES = {"apiKey", "jwt_bearer_token", "franceConnectToken", "sandboxBearer"}


@pytest.fixture
def browser(tmp_path):
    chromium = require("chromium")
    chromedriver = require("chromedriver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,1000", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(chromedriver, log_output=str(tmp_path / "chromedriver.log")),
                              options=options)
    driver.set_page_load_timeout(WAIT)
    yield driver
    driver.quit()


def _wait(driver, condition, message):
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(driver, WAIT, poll_frequency=0.1).until(condition, message)


def _visible(driver, css):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    return _wait(driver, ec.visibility_of_element_located((By.CSS_SELECTOR, css)), f"{css} never showed")


def _click(driver, element):
    # Swagger UI's sticky bits can sit over a button; scroll it to the middle first.
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
    element.click()


def _operation(driver, tag, path):
    """Open a tag, then its operation on `path`; the operation's block."""
    from selenium.webdriver.common.by import By
    block_css = f'.opblock:has(.opblock-summary [data-path="{path}"])'
    if not driver.find_elements(By.CSS_SELECTOR, block_css):
        _click(driver, _visible(driver, f'h3[data-tag="{tag}"]'))
    block = _visible(driver, block_css)
    if not block.find_elements(By.CSS_SELECTOR, ".try-out__btn"):
        _click(driver, block.find_element(By.CSS_SELECTOR, ".opblock-summary-control"))
    _visible(driver, block_css + " .try-out__btn")
    return block_css


def _fill(driver, block_css, values):
    from selenium.webdriver.common.by import By
    for name, value in values.items():
        field = driver.find_element(By.CSS_SELECTOR, f'{block_css} tr[data-param-name="{name}"] input')
        field.clear()
        if value:
            field.send_keys(value)


def _execute(driver, block_css):
    """Press Execute; (status shown, body shown, curl shown) of the live response."""
    from selenium.webdriver.common.by import By
    _click(driver, driver.find_element(By.CSS_SELECTOR, f"{block_css} .btn.execute"))
    status = _visible(driver, f"{block_css} .live-responses-table .response .response-col_status")
    body = _visible(driver, f"{block_css} .live-responses-table .response-col_description pre.microlight")
    curl = driver.find_element(By.CSS_SELECTOR, f"{block_css} .curl-command").text
    return int(status.text.split()[0]), json.loads(body.text), curl


def _open_console(start_server, browser, tmp_path):
    """A one-worker sandbox on the test's fixtures, and the browser on its /docs page."""
    server = start_server("--fixtures", str(write_fixtures(tmp_path / "fixtures")), "--workers", "1")
    browser.get(server.url + "/docs")
    return server, browser


def _authorised(driver):
    return set(driver.execute_script("return Object.keys(window.ui.authSelectors.authorized().toJS())"))


def test_get_a_token_and_try_a_v2_and_a_v3_route(start_server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    server, driver = _open_console(start_server, browser, tmp_path)
    _visible(driver, ".swagger-ui .information-container")
    assert driver.find_elements(By.CSS_SELECTOR, ".swagger-ui .info .title")[0].text.startswith("API Particulier")

    # One click: a token, shown with its expiry, and the console authorised on every scheme.
    _click(driver, driver.find_element(By.ID, "get-token"))
    _visible(driver, "#token-result")
    token = driver.find_element(By.ID, "token-value").get_attribute("value")
    assert token.count(".") == 2
    introspected = requests.get(server.url + "/api/introspect", headers={"X-Api-Key": token}, timeout=10)
    assert introspected.status_code == 200, "the page shows a token the sandbox accepts"
    all_scopes = [s["name"] for s in requests.get(server.url + "/sandbox/scopes", timeout=10).json()["scopes"]]
    assert sorted(introspected.json()["scopes"]) == sorted(all_scopes), "every scope is ticked by default"
    expiry = driver.find_element(By.ID, "token-expiry")
    assert expiry.get_attribute("datetime").endswith("Z") and expiry.text
    assert AUTHORISED_SCHEMES <= _authorised(driver)

    # v2, the way a person does it: open the route, Try it out, type, Execute.
    v2 = _operation(driver, "v2 France Travail", "/api/v2/situations-pole-emploi")
    _click(driver, driver.find_element(By.CSS_SELECTOR, f"{v2} .try-out__btn"))
    # The case lists identifiant only: empty the optional recipient that Swagger UI pre-fills
    # from the spec's example, so the request carries exactly the case's parameters.
    _fill(driver, v2, {"identifiant": "camille.essai", "recipient": ""})
    status, body, curl = _execute(driver, v2)
    assert (status, body) == (200, V2_PAYLOAD)
    assert f"X-Api-Key: {token}" in curl and server.url in curl

    # v3: the bearer scheme carries the same token; recipient is required.
    v3 = _operation(driver, "France Travail", "/v3/france_travail/statut/identifiant")
    _click(driver, driver.find_element(By.CSS_SELECTOR, f"{v3} .try-out__btn"))
    _fill(driver, v3, {"recipient": RECIPIENT, "identifiant": "dominique.v3"})
    status, body, curl = _execute(driver, v3)
    assert (status, body) == (200, V3_PAYLOAD)
    assert f"Authorization: Bearer {token}" in curl

    ARTIFACTS.mkdir(exist_ok=True)
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'});",
                          driver.find_element(By.CSS_SELECTOR, v3))
    driver.save_screenshot(str(ARTIFACTS / "docs-try-it.png"))

    # Everything the page loaded came from the sandbox, and the browser reported no error
    # (a CSP violation or a failed load would show up as a SEVERE console entry).
    loaded = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert loaded and all(url.startswith(server.url + "/") for url in loaded), loaded
    severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == []


def test_a_persona_link_opens_the_route_filled_in(start_server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    server, driver = _open_console(start_server, browser, tmp_path)
    _click(driver, _visible(driver, "#get-token"))
    _visible(driver, "#token-result")
    token = driver.find_element(By.ID, "token-value").get_attribute("value")

    driver.get(server.url + "/docs/personas")
    row = _visible(driver, "tr.sbx-case:has(pre.sbx-curl)")
    rows = driver.find_elements(By.CSS_SELECTOR, "tr.sbx-case")
    v2_row = next(r for r in rows if "Camille Dupont-Essai" in r.text)
    assert 'curl -H "X-Api-Key: $TOKEN"' in v2_row.find_element(By.CSS_SELECTOR, "pre.sbx-curl").text
    assert row.is_displayed()
    _click(driver, v2_row.find_element(By.CSS_SELECTOR, "a.sbx-try"))

    # The console opens on that route, in "Try it out", with the case's parameters and
    # nothing else (the optional recipient is left empty), and still holds the token.
    block = '.opblock:has(.opblock-summary [data-path="/api/v2/situations-pole-emploi"])'
    _visible(driver, f"{block} .try-out__btn.cancel")
    field = driver.find_element(By.CSS_SELECTOR, f'{block} tr[data-param-name="identifiant"] input')
    assert field.get_attribute("value") == "camille.essai"
    assert driver.find_element(By.CSS_SELECTOR, f'{block} tr[data-param-name="recipient"] input') \
        .get_attribute("value") == ""
    assert "apiKey" in _authorised(driver), "the token survives the navigation"
    assert driver.find_element(By.ID, "token-value").get_attribute("value") == token
    status, body, curl = _execute(driver, block)
    assert (status, body) == (200, V2_PAYLOAD)
    assert "identifiant=camille.essai" in curl and "recipient" not in curl


def test_try_it_out_then_execute_answers_200_without_typing(start_server, browser):
    """On the bundled population: the parameters come pre-filled with a persona that answers."""
    import yaml
    from selenium.webdriver.common.by import By

    server = start_server("--workers", "1")
    driver = browser
    driver.get(server.url + "/")  # the home page sends the browser to the console
    _visible(driver, ".swagger-ui .information-container")
    assert driver.current_url == server.url + "/docs"
    count = driver.find_element(By.ID, "scope-count")
    assert count.get_attribute("textContent").startswith("tous ("), "the page speaks French"
    _click(driver, driver.find_element(By.ID, "get-token"))
    _visible(driver, "#token-result")
    spec = yaml.safe_load(requests.get(server.url + "/openapi.yml", timeout=10).text)

    for tag, path in [("France Travail", "/v3/france_travail/statut/identifiant"),
                      ("v2 France Travail", "/api/v2/situations-pole-emploi")]:
        block = _operation(driver, tag, path)
        _click(driver, driver.find_element(By.CSS_SELECTOR, f"{block} .try-out__btn"))
        status, body, curl = _execute(driver, block)  # nothing typed
        assert status == 200, (path, body, curl)
        assert body == spec["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["example"]
    # the official staging's well-known keys, and not v2's optional recipient
    assert "situations-pole-emploi?identifiant=default'" in curl and "recipient" not in curl

    ARTIFACTS.mkdir(exist_ok=True)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});",
                          driver.find_element(By.CSS_SELECTOR, f"{block} .btn.execute"))
    driver.save_screenshot(str(ARTIFACTS / "docs-execute-prefilled.png"))


# Holds Swagger UI's fetch of the spec until the test lets it go, so a click on "Get a token"
# lands before the console knows the security schemes: the case a quick user or a slow
# machine produces by chance.
HOLD_SPEC = """
(function () {
  var realFetch = window.fetch;
  window.__releaseSpec = null;
  var released = new Promise(function (resolve) { window.__releaseSpec = resolve; });
  window.fetch = function (input, init) {
    var url = typeof input === "string" ? input : input.url;
    if (url.indexOf("/openapi.yml") >= 0) {
      return released.then(function () { return realFetch.call(window, input, init); });
    }
    return realFetch.call(window, input, init);
  };
})();
"""


def test_a_token_minted_before_the_spec_loaded_is_applied_once_it_has(start_server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    fixtures = write_fixtures(tmp_path / "fixtures")
    server = start_server("--fixtures", str(fixtures), "--workers", "1")
    driver = browser
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": HOLD_SPEC})
    driver.get(server.url + "/docs")
    _click(driver, _visible(driver, "#get-token"))
    _visible(driver, "#token-result")
    token = driver.find_element(By.ID, "token-value").get_attribute("value")
    assert driver.execute_script("return window.ui.specSelectors.specJson().size") == 0, \
        "the spec was held back, so the token came first"

    driver.execute_script("window.__releaseSpec()")
    _visible(driver, ".swagger-ui .information-container")
    _wait(driver, lambda d: AUTHORISED_SCHEMES <= _authorised(d), "the held token was never applied")
    applied = driver.execute_script("return window.ui.authSelectors.authorized().toJS()")
    assert applied["apiKey"]["value"] == token


def test_the_panel_token_is_applied_when_the_console_lost_its_own(start_server, browser, tmp_path):
    server, driver = _open_console(start_server, browser, tmp_path)
    _visible(driver, ".swagger-ui .information-container")
    _click(driver, _visible(driver, "#get-token"))
    _visible(driver, "#token-result")
    _wait(driver, lambda d: "apiKey" in _authorised(d), "the token was never applied")
    token = driver.execute_script("return window.ui.authSelectors.authorized().toJS().apiKey.value")

    # Swagger UI's own copy gone (cleared by hand, or kept by another tab), the panel's kept.
    driver.execute_script("localStorage.removeItem('authorized')")
    driver.refresh()
    _visible(driver, ".swagger-ui .information-container")
    _wait(driver, lambda d: AUTHORISED_SCHEMES <= _authorised(d), "the panel's token was not applied")
    assert driver.execute_script("return window.ui.authSelectors.authorized().toJS().apiKey.value") == token
