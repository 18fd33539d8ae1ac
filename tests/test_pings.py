"""Provider pings as production answers them: `GET /api/:provider/ping`, `GET /api/pings`
(siade/app/controllers/concerns/handle_ping_providers.rb, siade/app/services/ping_service.rb and
its spec siade/spec/services/ping_service_spec.rb), driven by the sandbox's provider states."""
from __future__ import annotations

import datetime

import pytest
import requests
import yaml

from sandbox.production import pings
from sandbox.settings import ConfigError, Settings, parse_provider_states

from .conftest import RECIPIENT, ROOT, token_for

PARIS_NOON = datetime.datetime(2023, 9, 10, 10, 0, tzinfo=datetime.timezone.utc)  # 12:00 in Paris
AEEH = "/v3/dss/allocation_enfant_handicape/identite"
ARS = "/v3/dss/allocation_rentree_scolaire/identite"
PERSON = [("recipient", RECIPIENT), ("nomNaissance", "DEMO"), ("prenoms[]", "Aïcha"), ("prenoms[]", "Nour"),
          ("anneeDateNaissance", "1994"), ("moisDateNaissance", "2"), ("jourDateNaissance", "28"),
          ("sexeEtatCivil", "F"), ("codeCogInseePaysNaissance", "99350")]


def _frozen(states=None):
    return pings.Pings(states, clock=lambda: PARIS_NOON)


# --- the answers, clock frozen ---------------------------------------------------------------

def test_an_up_provider_answers_ok_with_production_timestamps():
    assert _frozen().answer("men_scolarite") == (200, {
        "status": "ok", "last_update": "2023-09-10T12:00:00.000+02:00",
        "last_ok_status": "2023-09-10T12:00:00.000+02:00"})


def test_maintenance_answers_200_with_until_after_the_provider_window():
    # MEN's window is 01:10-02:30 in production's maintenances.yml: until = now + 80 minutes
    assert _frozen({"men_scolarite": "maintenance"}).answer("men_scolarite") == (200, {
        "status": "maintenance", "until": "2023-09-10T13:20:00.000+02:00",
        "last_update": "2023-09-10T12:00:00.000+02:00", "last_ok_status": "2023-09-10T12:00:00.000+02:00"})
    # a provider without a window: the table's default length (one hour)
    status, body = _frozen({"cnav_allocation_rentree_scolaire": "maintenance"}).answer("cnav_allocation_rentree_scolaire")
    assert (status, body["until"]) == (200, "2023-09-10T13:00:00.000+02:00")


def test_failure_answers_502_bad_gateway_and_keeps_the_last_ok_time():
    moments = iter([PARIS_NOON, PARIS_NOON + datetime.timedelta(minutes=5)])
    table = pings.Pings(clock=lambda: next(moments))
    assert table.answer("ants")[0] == 200
    assert table.answer("ants", asked="failure") == (502, {
        "status": "bad_gateway", "last_update": "2023-09-10T12:05:00.000+02:00",
        "last_ok_status": "2023-09-10T12:00:00.000+02:00"})


def test_an_unknown_provider_is_production_404_with_an_empty_object():
    assert _frozen().answer("caf") == (404, {})


def test_unknown_keys_and_states_are_refused():
    with pytest.raises(pings.UnknownProvider, match="cnav_allocation_rentree_scolaire"):
        pings.Pings({"cnaf": "maintenance"})
    with pytest.raises(pings.UnknownProvider, match="maintenance, failure"):
        pings.Pings({"ants": "down"})
    with pytest.raises(ConfigError):
        parse_provider_states(["ants"])
    assert parse_provider_states(["ants=Failure", " men_scolarite = maintenance "]) == {
        "ants": "failure", "men_scolarite": "maintenance"}
    assert Settings.from_env({"SANDBOX_PROVIDER_STATES": "ants=failure;sdh_statut_sportif=maintenance"}).provider_states \
        == {"ants": "failure", "sdh_statut_sportif": "maintenance"}


def test_every_operation_a_ping_watches_is_an_operation_of_the_sandbox():
    operations = yaml.safe_load((ROOT / "sandbox/production/data/operations.yml").read_text())["operations"]
    watched = {op for entry in pings.PROVIDERS.values() for op in entry["operations"]}
    assert watched - set(operations) == set()
    # every CNAV benefit and every provider of a route has its ping
    assert {op for op in operations if op.startswith("api_particulier_v3")} - watched == {
        "api_particulier_v3_gip_mds_service_civique_with_civility",  # production has no GIP-MDS ping
        "api_particulier_v3_gip_mds_service_civique_with_france_connect"}


# --- through the app ---------------------------------------------------------------------------

def test_pings_index_lists_every_status_page_with_absolute_urls(client):
    answer = client.get("/api/pings", base_url="https://particulier.example.fr")
    assert answer.status_code == 200 and answer.content_type == "application/json; charset=utf-8"
    listed = answer.json
    assert {"name": "CNAV - Allocation Enfant Handicapé (AEEH)",
            "url": "https://particulier.example.fr/api/cnav_allocation_enfant_handicape/ping"} in listed
    assert len(listed) == len(pings.PROVIDERS)
    for entry in listed:
        assert client.get(entry["url"]).status_code == 200  # each URL listed answers


def test_provider_ping_in_normal_state_needs_no_token(client):
    answer = client.get("/api/cnav_allocation_rentree_scolaire/ping")
    assert answer.status_code == 200
    assert answer.json["status"] == "ok"
    datetime.datetime.fromisoformat(answer.json["last_update"])  # an ISO 8601 time with its offset
    assert client.get("/api/inconnu/ping").status_code == 404 and client.get("/api/inconnu/ping").json == {}


def test_a_fault_header_on_the_ping_answers_for_that_call_only(client):
    maintenance = client.get("/api/men_scolarite/ping", headers={"X-Sandbox-Fault": "maintenance"})
    assert maintenance.status_code == 200 and maintenance.json["status"] == "maintenance"
    assert "until" in maintenance.json
    failure = client.get("/api/men_scolarite/ping", headers={"Prefer": "code=504"})
    assert failure.status_code == 502 and failure.json["status"] == "bad_gateway"
    assert client.get("/api/men_scolarite/ping").json["status"] == "ok"
    refused = client.get("/api/men_scolarite/ping", headers={"X-Sandbox-Fault": "en-panne"})
    assert refused.status_code == 400  # a fault the sandbox does not know is refused, not ignored


def test_with_faults_off_the_header_changes_nothing(make_app):
    client = make_app(faults=False, ip_rate_limit="off").test_client()
    answer = client.get("/api/men_scolarite/ping", headers={"X-Sandbox-Fault": "maintenance"})
    assert answer.status_code == 200 and answer.json["status"] == "ok"


def test_a_provider_down_for_the_run_answers_so_on_its_ping_and_its_routes(make_app):
    client = make_app(ip_rate_limit="off", provider_states={"cnav_allocation_rentree_scolaire": "maintenance",
                                                            "cnav_allocation_enfant_handicape": "failure"}).test_client()
    token = {"Authorization": f"Bearer {token_for()}"}
    ping = client.get("/api/cnav_allocation_rentree_scolaire/ping")
    assert ping.status_code == 200 and ping.json["status"] == "maintenance"
    route = client.get(ARS, query_string=PERSON, headers=token)
    assert route.status_code == 503 and route.json["errors"][0]["code"] == "36020"
    failing = client.get("/api/cnav_allocation_enfant_handicape/ping")
    assert failing.status_code == 502 and failing.json["status"] == "bad_gateway"
    route = client.get(AEEH, query_string=PERSON, headers=token)
    assert route.status_code == 502 and route.json["errors"][0]["code"] == "36001"
    # the v2 and v3 routes of a provider that is up still answer their cases
    up = client.get("/v3/dss/allocation_soutien_familial/identite", query_string=PERSON, headers=token)
    assert up.status_code == 200
    assert client.get("/api/cnaf_msa_allocation_soutien_familial/ping").json["status"] == "ok"
    # the journal names the fault the call answered
    journal = client.get("/sandbox/requests", headers=token).json
    assert any(row.get("fault") == "maintenance" for row in (journal if isinstance(journal, list) else journal["requests"]))


def test_an_unknown_provider_state_stops_the_start(make_app):
    with pytest.raises(ConfigError, match="provider-state"):
        make_app(provider_states={"caf": "maintenance"})


@pytest.mark.slow
def test_pings_through_a_real_server_with_a_provider_in_failure(start_server):
    server = start_server("--provider-state", "ants=failure",
                          env={"SANDBOX_PROVIDER_STATES": "men_scolarite=maintenance"})
    # the flag wins over the environment (README, Configuration): MEN stays up
    ants = requests.get(server.url + "/api/ants/ping", timeout=10)
    assert ants.status_code == 502 and ants.json()["status"] == "bad_gateway"
    men = requests.get(server.url + "/api/men_scolarite/ping", timeout=10)
    assert men.status_code == 200 and men.json()["status"] == "ok"
    listed = requests.get(server.url + "/api/pings", timeout=10).json()
    assert {"name": "ANTS - Extrait Immatriculation Vehicule", "url": f"{server.url}/api/ants/ping"} in listed
    plate = requests.get(server.url + "/v3/ants/extrait_immatriculation_vehicule/france_connect",
                         params={"recipient": RECIPIENT, "immatriculation": "AA-001-ZZ"},
                         headers={"Authorization": "Bearer tout"}, timeout=10)
    assert plate.status_code == 502 and plate.json()["errors"][0]["title"] == "Service non disponible"
