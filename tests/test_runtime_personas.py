"""Personas created at run time (POST /sandbox/personas): checked like fixture files, served at
once to the token that created them (or to all, when global), on every worker and every host."""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.conftest import RECIPIENT, token_for, v2_headers, v3_headers
from tests.test_docs_browser import browser  # noqa: F401  (a fixture)
from tests.test_pytest_plugin import run_pytest, write_project

V3_ROUTE = "/v3/france_travail/statut/identifiant"
V3_OPERATION = "api_particulier_v3_france_travail_statut_with_identifiant"
V3_DEFAULT = f"{V3_OPERATION}/200_default.yaml"
V2_ROUTE = "/api/v2/situations-pole-emploi"
V2_OPERATION = "api_particulier_v2_pole_emploi_statut"
T0 = 1_900_000_000.0


def zoe(identifiant="zoe.runtime", **extra) -> dict:
    """A copy of the bundled `identifiant=default` job seeker, with another name and identifiant."""
    return {"like": V3_DEFAULT, "params": {"identifiant": identifiant},
            "payload": {"data": {"identifiant": identifiant, "identite": {"prenom": "ZOE"}}}, **extra}


def create(client, token, body, raw=False):
    answer = client.post("/sandbox/personas", data=json.dumps(body), headers=v2_headers(token),
                         content_type="application/json")
    return answer if raw else (answer.status_code, answer.get_json())


def call_v3(client, token, identifiant="zoe.runtime"):
    return client.get(V3_ROUTE, query_string={"identifiant": identifiant, "recipient": RECIPIENT},
                      headers=v3_headers(token))


@pytest.fixture
def sandbox_app(make_app):
    return make_app(ip_rate_limit="off")


@pytest.fixture
def client(sandbox_app):
    return sandbox_app.test_client()


# --- created, served to its creator only ---------------------------------------------------------
def test_a_persona_is_served_to_the_token_that_created_it_only(client):
    mine, other = token_for(), token_for()
    status, persona = create(client, mine, zoe())
    assert status == 201, persona
    assert persona["case"] == f"runtime/{persona['id']}" and persona["global"] is False
    assert persona["expires_at"] is not None and persona["operation"] == V3_OPERATION  # with the token at the latest
    assert "identifiant=zoe.runtime" in persona["curl"]

    answer = call_v3(client, mine)
    assert answer.status_code == 200
    assert answer.headers["X-Sandbox-Case"] == f"runtime/{persona['id']}"
    assert answer.get_json()["data"]["identite"]["prenom"] == "ZOE"
    journal = client.get("/sandbox/requests", headers=v2_headers(mine)).get_json()["requests"]
    assert journal[0]["case"] == f"runtime/{persona['id']}"

    unknown = call_v3(client, other, "nobody.at.all")
    hidden = call_v3(client, other)
    assert hidden.status_code == 404 and hidden.get_json() == unknown.get_json()  # production's not-found
    assert hidden.headers["X-Sandbox-Case"] == f"{V3_OPERATION}/404.yaml"


def test_a_persona_wins_over_the_fixture_with_the_same_params_and_is_masked_by_scopes(client):
    mine = token_for()
    status, persona = create(client, mine, zoe("default"))
    assert status == 201, persona
    assert call_v3(client, mine, "default").get_json()["data"]["identite"]["prenom"] == "ZOE"
    assert call_v3(client, token_for(), "default").get_json()["data"]["identite"]["prenom"] == "JULIEN"

    narrow = token_for(["pole_emploi_identite", "pole_emploi_identifiant"])
    status, _ = create(client, narrow, zoe("default"))
    data = call_v3(client, narrow, "default").get_json()["data"]
    assert data["identite"]["prenom"] == "ZOE"
    assert "adresse" not in data and "inscription" not in data and "contact" not in data


def test_the_newest_persona_with_the_same_params_answers(client):
    mine = token_for()
    create(client, mine, zoe())
    _, second = create(client, mine, {**zoe(), "payload": {"data": {"identite": {"prenom": "ZELIE"}}}})
    answer = call_v3(client, mine)
    assert answer.headers["X-Sandbox-Case"] == f"runtime/{second['id']}"
    assert answer.get_json()["data"]["identite"]["prenom"] == "ZELIE"


def test_a_token_is_required(client):
    answer = client.post("/sandbox/personas", json=zoe())
    assert answer.status_code == 401 and answer.get_json()["error"] == "access_denied"


# --- global ----------------------------------------------------------------------------------------
def test_a_global_persona_is_served_to_every_token_and_listed_without_a_token(client):
    mine, other = token_for(), token_for()
    _, private = create(client, mine, zoe("zoe.private"))
    status, shared = create(client, mine, zoe("zoe.shared", **{"global": True}))
    assert status == 201 and shared["global"] is True

    assert call_v3(client, other, "zoe.shared").headers["X-Sandbox-Case"] == f"runtime/{shared['id']}"

    def runtime_ids(**kwargs):
        operations = client.get("/sandbox/personas", **kwargs).get_json()["operations"]
        return {case["id"] for op in operations for case in op["cases"] if case.get("runtime")}
    assert runtime_ids() == {shared["id"]}
    assert runtime_ids(headers=v2_headers(other)) == {shared["id"]}
    assert runtime_ids(headers=v2_headers(mine)) == {shared["id"], private["id"]}
    assert client.get(f"/sandbox/personas/{shared['id']}").get_json()["payload"]["data"]["identite"]["prenom"] == "ZOE"
    assert client.get(f"/sandbox/personas/{private['id']}", headers=v2_headers(other)).status_code == 404
    assert shared["id"] in client.get("/docs/personas").get_data(as_text=True)  # the page lists global ones


# --- expiry ----------------------------------------------------------------------------------------
def test_a_persona_expires_after_its_ttl(sandbox_app, client):
    store = sandbox_app.extensions["sandbox"].store
    now = [T0]
    store.clock = lambda: now[0]
    mine = token_for(ttl=10 * 365 * 86400)  # past T0: a token's persona never outlives the token
    status, persona = create(client, mine, zoe(ttl=60))
    assert status == 201 and persona["expires_at"] == "2030-03-17T17:47:40Z"  # T0 + 60 s

    now[0] = T0 + 59
    assert call_v3(client, mine).status_code == 200
    now[0] = T0 + 60
    assert call_v3(client, mine).status_code == 404
    assert client.get(f"/sandbox/personas/{persona['id']}", headers=v2_headers(mine)).status_code == 404
    assert store.personas() == []

    # still held until the next write purges it
    count = lambda: store._run(lambda txn: txn.stat(store._personas)["entries"], write=False)  # noqa: E731
    assert count() == 1
    create(client, mine, zoe("another"))
    assert count() == 1


# --- refused like a broken fixture file ------------------------------------------------------------
def test_a_payload_that_breaks_the_schema_is_refused_naming_the_field(client):
    answer = create(client, token_for(), {**zoe(), "payload": {"data": {"identite": {"prenom": 3}}}}, raw=True)
    assert answer.status_code == 422
    body = answer.get_json()
    assert set(body) == {"error", "reason", "message"}
    assert body["reason"].startswith("$.payload.data.identite.prenom: 3 is not of type 'string'")


def test_a_relative_date_that_does_not_parse_is_refused_naming_the_field(client):
    body = {**zoe(), "payload": {"data": {"inscription": {"date_debut": "{{ today - 2 mnths }}"}}}}
    status, answer = create(client, token_for(), body)
    assert status == 422
    assert answer["reason"].startswith("$.payload.data.inscription.date_debut: not a relative date")


def test_a_relative_date_is_resolved_on_the_day_of_the_answer(client, monkeypatch):
    import datetime

    from sandbox.production import clock
    monkeypatch.setattr(clock, "_FROZEN", datetime.date(2031, 3, 15))
    mine = token_for()
    create(client, mine, {**zoe(), "payload": {"data": {"inscription": {"date_debut": "{{ first day of last month }}"}}}})
    assert call_v3(client, mine).get_json()["data"]["inscription"]["date_debut"] == "2031-02-01"


@pytest.mark.parametrize("params, where", [
    ({"identifiant": "x", "numero": "1"}, "$.params.numero: n'est pas un paramètre de GET /v3/france_travail"),
    ({"identifiant": ""}, "$.params"),
])
def test_parameters_are_checked_as_the_route_checks_them(client, params, where):
    status, answer = create(client, token_for(), {"like": V3_DEFAULT, "params": params})
    assert status == 422 and answer["reason"].startswith(where), answer


@pytest.mark.parametrize("body, where", [
    ({"params": {"identifiant": "x"}, "payload": {}}, "$.operation: obligatoire"),
    ({"operation": "/v3/nowhere", "payload": {}}, "$.operation: no operation"),
    ({"like": f"{V3_OPERATION}/nope.yaml"}, "$.like: aucun cas"),
    ({"like": V3_DEFAULT, "status": 418}, "$.status: status 418 is not declared"),
    ({"like": V3_DEFAULT, "ttl": 0}, "$.ttl"),
    ({"like": V3_DEFAULT, "colour": "blue"}, "$.colour: champ inconnu"),
    ([1, 2], "$: le corps doit être un objet JSON"),
])
def test_malformed_requests_name_the_field(client, body, where):
    status, answer = create(client, token_for(), body)
    assert status == 422 and answer["reason"].startswith(where), answer


# --- `like` with overrides -------------------------------------------------------------------------
def test_like_merges_params_and_deep_merges_the_payload(client):
    mine = token_for()
    status, persona = create(client, mine, {"like": "/api/v2/situations-pole-emploi/200_default",
                                            "params": {"identifiant": "copie"},
                                            "payload": {"prenom": "ZOE", "adresse": {"codePostal": "69001"}}})
    assert status == 201, persona
    assert persona["like"] == f"{V2_OPERATION}/200_default.yaml" and persona["status"] == 200
    body = client.get(V2_ROUTE, query_string={"identifiant": "copie"}, headers=v2_headers(mine)).get_json()
    assert body["prenom"] == "ZOE" and body["nom"] == "ESSAI"                       # kept from the case
    assert body["adresse"]["codePostal"] == "69001" and body["adresse"]["ligneVoie"] == "14 RUE DU BAC A SABLE"

    # a runtime persona is a model too, under the name X-Sandbox-Case gives it
    status, again = create(client, mine, {"like": persona["case"], "params": {"identifiant": "copie2"}})
    assert status == 201 and again["payload"]["prenom"] == "ZOE"


def test_a_persona_with_an_operation_and_a_payload_of_its_own(client):
    mine = token_for()
    payload = {"error": "not_found", "reason": "Personne inconnue", "message": "Personne inconnue"}
    status, persona = create(client, mine, {"operation": V2_OPERATION, "params": {"identifiant": "absent"},
                                            "status": 404, "payload": payload})
    assert status == 201, persona
    answer = client.get(V2_ROUTE, query_string={"identifiant": "absent"}, headers=v2_headers(mine))
    assert answer.status_code == 404 and answer.get_json() == payload


# --- deletion ----------------------------------------------------------------------------------------
def test_delete_by_its_creator_and_anyone_for_a_global_one(client):
    mine, other = token_for(), token_for()
    _, private = create(client, mine, zoe())
    _, shared = create(client, mine, zoe("zoe.shared", **{"global": True}))

    assert client.delete(f"/sandbox/personas/{private['id']}", headers=v2_headers(other)).status_code == 404
    assert call_v3(client, mine).status_code == 200
    assert client.delete(f"/sandbox/personas/runtime/{private['id']}", headers=v2_headers(mine)).status_code == 204
    assert call_v3(client, mine).status_code == 404
    assert client.delete(f"/sandbox/personas/{private['id']}", headers=v2_headers(mine)).status_code == 404

    assert client.delete(f"/sandbox/personas/{shared['id']}", headers=v2_headers(other)).status_code == 204
    assert call_v3(client, mine, "zoe.shared").status_code == 404
    assert client.delete(f"/sandbox/personas/{V3_DEFAULT}", headers=v2_headers(mine)).status_code == 404


def test_an_answer_worked_out_while_another_thread_rebuilt_the_index_is_worked_out_again(make_app, monkeypatch):
    """Worker A's index predates a persona worker B created; while A looks a call up, another of
    A's threads rebuilds A's index. The answer A worked out from the old index is not the one sent."""
    worker_a, worker_b = make_app(ip_rate_limit="off"), make_app(ip_rate_limit="off")  # one store
    token = token_for()
    assert call_v3(worker_a.test_client(), token).status_code == 404  # A's index built, without zoe
    status, persona = create(worker_b.test_client(), token, zoe())
    assert status == 201
    personas = worker_a.extensions["sandbox"].personas
    look_up = personas.match

    def match_while_another_thread_rebuilds(*args):
        found = look_up(*args)
        personas.refresh(personas.store.personas_version())
        return found
    monkeypatch.setattr(personas, "match", match_while_another_thread_rebuilds)
    answer = call_v3(worker_a.test_client(), token)
    assert (answer.status_code, answer.headers["X-Sandbox-Case"]) == (200, f"runtime/{persona['id']}")


# --- every worker, every host ------------------------------------------------------------------------
def served_cases(url, token, identifiant, calls=60):
    """X-Sandbox-Case of `calls` calls, each on a fresh connection, 8 at a time (both workers answer)."""
    def one(_):
        answer = requests.get(url + V3_ROUTE, params={"identifiant": identifiant, "recipient": RECIPIENT},
                              headers=v3_headers(token), timeout=30)  # a loaded CI host: workers' first calls
        return answer.status_code, answer.headers.get("X-Sandbox-Case")
    with ThreadPoolExecutor(8) as pool:
        return set(pool.map(one, range(calls)))


def post(url, token, body):
    return requests.post(url + "/sandbox/personas", json=body, headers=v2_headers(token), timeout=10)


@pytest.mark.slow
def test_every_worker_serves_a_new_persona_at_once(start_server):
    server = start_server("--workers", "2", env={"SANDBOX_IP_RATE_LIMIT": "off", "SANDBOX_RATE_LIMIT": "off"})
    mine, other = token_for(), token_for()
    assert served_cases(server.url, mine, "zoe.runtime") == {(404, f"{V3_OPERATION}/404.yaml")}  # both indexes built

    persona = post(server.url, mine, zoe()).json()
    assert served_cases(server.url, mine, "zoe.runtime") == {(200, f"runtime/{persona['id']}")}
    assert served_cases(server.url, other, "zoe.runtime") == {(404, f"{V3_OPERATION}/404.yaml")}
    # a worker that learnt of the persona when counting a call answered it again, counted once
    journal = requests.get(server.url + "/sandbox/requests", headers=v2_headers(mine), timeout=10).json()
    assert [row["status"] for row in journal["requests"]] == [200] * 60 + [404] * 60

    requests.delete(f"{server.url}/sandbox/personas/{persona['id']}", headers=v2_headers(mine), timeout=10)
    assert served_cases(server.url, mine, "zoe.runtime") == {(404, f"{V3_OPERATION}/404.yaml")}


@pytest.mark.slow
def test_a_persona_created_on_one_host_is_served_by_another_on_the_same_redis(start_server, redis_server):
    env = {"SANDBOX_IP_RATE_LIMIT": "off", "SANDBOX_RATE_LIMIT": "off"}
    first = start_server("--redis", redis_server.url, "--workers", "2", env=env)
    second = start_server("--redis", redis_server.url, "--workers", "2", env=env)
    mine, other = token_for(), token_for()

    answer = post(first.url, mine, zoe())
    assert answer.status_code == 201, answer.text
    persona = answer.json()
    assert served_cases(second.url, mine, "zoe.runtime", 30) == {(200, f"runtime/{persona['id']}")}
    assert served_cases(second.url, other, "zoe.runtime", 10) == {(404, f"{V3_OPERATION}/404.yaml")}
    shared = post(second.url, other, zoe("zoe.shared", **{"global": True})).json()
    assert served_cases(first.url, mine, "zoe.shared", 30) == {(200, f"runtime/{shared['id']}")}

    gone = requests.delete(f"{second.url}/sandbox/personas/{persona['id']}", headers=v2_headers(mine), timeout=10)
    assert gone.status_code == 204
    assert served_cases(first.url, mine, "zoe.runtime", 30) == {(404, f"{V3_OPERATION}/404.yaml")}


@pytest.mark.slow
def test_redis_store_keeps_expiry_and_version(redis_server):
    from sandbox.store.redis_store import RedisStore
    now = [T0]
    store = RedisStore(redis_server.url, 100, clock=lambda: now[0])
    assert store.personas_version() == 0
    store.put_persona("a", '{"id": "a"}', T0 + 10)
    store.put_persona("b", '{"id": "b"}', None)
    assert sorted(store.personas()) == ['{"id": "a"}', '{"id": "b"}'] and store.personas_version() == 2
    now[0] = T0 + 10
    assert store.personas() == ['{"id": "b"}']
    assert store.delete_persona("b") is True and store.delete_persona("b") is False
    # one version for the write that purged "a" and deleted "b"; none for the one that changed nothing
    assert store.personas() == [] and store.personas_version() == 3
    assert store.persona_changes(2) == (3, {"a": None, "b": None})
    import redis
    assert redis.Redis.from_url(redis_server.url).hlen("sandbox:personas") == 0  # "a" purged by the write


# --- the pytest plugin ------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_pytest_plugin_creates_personas_and_removes_them_after_the_test(tmp_path):
    project = write_project(tmp_path / "project", '''
        import pytest, requests

        ROUTE = "/v3/france_travail/statut/identifiant"

        def test_my_own_persona(particulier_sandbox):
            token = particulier_sandbox.token()
            persona = particulier_sandbox.persona(
                like="api_particulier_v3_france_travail_statut_with_identifiant/200_default.yaml",
                params={"identifiant": "ma.persona"}, payload={"data": {"identite": {"prenom": "ZOE"}}})
            answer = requests.get(particulier_sandbox.url(ROUTE), timeout=10,
                                  params={"identifiant": "ma.persona", "recipient": particulier_sandbox.recipient},
                                  headers={"Authorization": f"Bearer {token}"})
            assert answer.json()["data"]["identite"]["prenom"] == "ZOE"
            assert answer.headers["X-Sandbox-Case"] == persona["case"]

        def test_a_refused_persona_says_why(particulier_sandbox):
            with pytest.raises(ValueError, match=r"\\$\\.payload\\.prenom"):
                particulier_sandbox.persona(like="/api/v2/situations-pole-emploi/200_default",
                                            params={"identifiant": "x"}, payload={"prenom": 3})

        def test_zz_the_personas_of_earlier_tests_are_gone(particulier_sandbox):
            assert particulier_sandbox.app.extensions["sandbox"].store.personas() == []
        ''')
    code, counts, outcomes, output = run_pytest(project, tmp_path / "junit.xml", "-p", "sandbox.pytest_plugin")
    assert code == 0, output
    assert counts["tests"] == 3 and set(outcomes.values()) == {"passed"}, output


# --- FranceConnect: chosen by the identity behind the token ---------------------------------------
def test_a_france_connect_persona_is_chosen_by_the_identity_of_the_token(client):
    route, model = "/v3/dss/quotient_familial/france_connect", \
        "api_particulier_v3_cnav_quotient_familial_with_france_connect/200_fc_bacasable_camille.yaml"
    like = {"like": model, "payload": {"data": {"quotient_familial": {"valeur": 1999}}}}

    def valeur():
        answer = client.get(route, query_string={"recipient": RECIPIENT}, headers=v3_headers("tout"))
        return answer.headers["X-Sandbox-Case"], answer.get_json()["data"]["quotient_familial"]["valeur"]

    create(client, token_for(), like)  # private to a sandbox token: not the FranceConnect caller's
    assert valeur() == (model, 612)
    _, own = create(client, "tout", like)  # created with the FranceConnect token itself
    assert valeur() == (f"runtime/{own['id']}", 1999)
    client.delete(f"/sandbox/personas/{own['id']}", headers=v2_headers("tout"))
    _, shared = create(client, token_for(), {**like, "global": True})
    assert valeur() == (f"runtime/{shared['id']}", 1999)
    _, other = create(client, token_for(), {**like, "global": True, "params": {"nomNaissance": "AUTRE"}})
    assert valeur() == (f"runtime/{shared['id']}", 1999)  # another identity: not this token's


# --- the persona page's "Cloner" button ------------------------------------------------------------
@pytest.mark.slow
def test_the_clone_button_creates_an_edited_copy(start_server, browser):
    from selenium.webdriver.common.by import By

    from tests.test_docs_browser import _click, _visible, _wait
    server = start_server("--workers", "1")
    driver = browser
    driver.get(server.url + "/docs/personas")
    row = next(r for r in driver.find_elements(By.CSS_SELECTOR, f"#{V3_OPERATION} tr.sbx-case")
               if "200_default.yaml" in r.text)
    _click(driver, row.find_element(By.CSS_SELECTOR, "button.sbx-clone"))
    _visible(driver, "#clone-dialog")
    params = driver.find_element(By.ID, "clone-params")
    assert json.loads(params.get_attribute("value")) == {"identifiant": "default"}

    params.clear()
    params.send_keys('{"identifiant": "clone.navigateur"}')
    payload = driver.find_element(By.ID, "clone-payload")
    edited = json.loads(payload.get_attribute("value"))
    edited["data"]["identite"]["prenom"] = 7  # refused first: the field is named
    driver.execute_script("arguments[0].value = arguments[1];", payload, json.dumps(edited))
    _click(driver, driver.find_element(By.ID, "clone-submit"))
    error = _visible(driver, "#clone-error")
    assert "$.payload.data.identite.prenom" in error.text and "422" in error.text

    edited["data"]["identite"]["prenom"] = "CLONE"
    driver.execute_script("arguments[0].value = arguments[1];", payload, json.dumps(edited))
    _click(driver, driver.find_element(By.ID, "clone-submit"))
    _visible(driver, "#clone-result")
    token = driver.find_element(By.ID, "clone-token").get_attribute("value")
    assert "identifiant=clone.navigateur" in driver.find_element(By.ID, "clone-curl").text
    _wait(driver, lambda d: d.find_element(By.ID, "clone-error").get_attribute("hidden") is not None, "error kept")

    answer = requests.get(server.url + V3_ROUTE, params={"identifiant": "clone.navigateur", "recipient": RECIPIENT},
                          headers=v3_headers(token), timeout=10)
    assert answer.status_code == 200 and answer.json()["data"]["identite"]["prenom"] == "CLONE"
    assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE" and "422" not in e["message"]] == []
