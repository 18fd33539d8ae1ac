"""The built-in FranceConnect as a person uses it: headless Chromium against a real gunicorn.

From the "try it" page, "Se connecter avec FranceConnect" opens the citizen picker; the person
filters, picks a citizen, unticks one data scope on the consent page and continues; the access
token comes back to the page, which sends it on FranceConnect routes only. Screenshots of the
picker and the consent page go to test-artifacts/.
"""
from __future__ import annotations

import pytest
import requests

from .conftest import ARTIFACTS, RECIPIENT
from .test_docs_browser import WAIT, _visible, _wait, browser  # noqa: F401  (browser is a fixture)

pytestmark = pytest.mark.slow


def test_picker_and_consent_in_a_browser(start_server, browser):  # noqa: F811
    from selenium.webdriver.common.by import By

    server = start_server("--workers", "2")
    ARTIFACTS.mkdir(exist_ok=True)
    browser.get(server.url + "/docs")
    button = _visible(browser, "#franceconnect-button")
    _wait(browser, lambda d: button.is_enabled(), "the FranceConnect button never became usable")
    docs_window = browser.current_window_handle
    button.click()
    _wait(browser, lambda d: len(d.window_handles) == 2, "no FranceConnect window opened")
    browser.switch_to.window([h for h in browser.window_handles if h != docs_window][0])

    _visible(browser, "#fc-picker")
    assert "Se connecter avec FranceConnect" in browser.find_element(By.TAG_NAME, "h1").text
    households = browser.find_elements(By.CSS_SELECTOR, ".fc-household")
    assert len(households) > 20
    browser.save_screenshot(str(ARTIFACTS / "franceconnect-picker.png"))
    search = browser.find_element(By.ID, "fc-filter")
    search.send_keys("le goff")
    _wait(browser, lambda d: len([h for h in d.find_elements(By.CSS_SELECTOR, ".fc-household")
                                  if h.is_displayed()]) == 1, "the filter did not narrow the households")
    card = browser.find_element(By.CSS_SELECTOR, '.fc-card[data-citizen="cnaf_parent_isole"]')
    card.find_element(By.CSS_SELECTOR, "summary").click()  # the routes this citizen answers on
    browser.execute_script("arguments[0].scrollIntoView({block: 'start'});", card)
    browser.save_screenshot(str(ARTIFACTS / "franceconnect-picker-filtered.png"))
    assert "LE GOFF" in card.text
    card.find_element(By.CSS_SELECTOR, "button").click()

    _visible(browser, "#fc-consent")
    assert "Anne-Sophie LE GOFF" in browser.find_element(By.CSS_SELECTOR, ".fc-who").text
    scope_boxes = browser.find_elements(By.CSS_SELECTOR, '#fc-consent input[name="scope"]')
    assert len(scope_boxes) > 20 and all(box.is_selected() for box in scope_boxes)
    browser.save_screenshot(str(ARTIFACTS / "franceconnect-consent.png"))
    browser.find_element(By.CSS_SELECTOR, '#fc-consent input[value="cnaf_adresse"]').click()
    browser.find_element(By.ID, "fc-accept").click()

    _wait(browser, lambda d: len(d.window_handles) == 1, "the FranceConnect window did not close")
    browser.switch_to.window(docs_window)
    status = _visible(browser, "#franceconnect-status")
    _wait(browser, lambda d: "Connecté" in status.text, "the page never got the access token")
    token = status.get_attribute("data-token")

    # The console sends it on FranceConnect routes, and only there.
    headers = browser.execute_script(
        "var i = window.ui.getConfigs().requestInterceptor;"
        "return [i({url: '/v3/dss/quotient_familial/france_connect?recipient=1', headers: {}}).headers,"
        "        i({url: '/v3/dss/quotient_familial/identite', headers: {}}).headers];")
    assert headers[0] == {"Authorization": f"Bearer {token}"} and headers[1] == {}

    answer = requests.get(f"{server.url}/v3/dss/quotient_familial/france_connect", params={"recipient": RECIPIENT},
                          headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert answer.status_code == 200, answer.text
    data = answer.json()["data"]
    assert data["allocataires"][0]["nom_naissance"] == "LE GOFF" and "enfants" in data
    assert "adresse" not in data  # unticked on the consent page
