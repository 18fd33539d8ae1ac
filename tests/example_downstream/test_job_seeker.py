"""The downstream application's own tests, written as a user of particulier-sandbox writes them.

`particulier_sandbox` (from the plugin) serves the bundled fixtures plus ./personas (see
pytest.ini); each test mints its own token, so the journal only holds this test's calls.
"""
import time

import pytest
import requests
from job_seeker import JobSeekerClient, NotAllowed, ProviderUnavailable, STATUT_V2


@pytest.fixture
def client(particulier_sandbox):
    return JobSeekerClient(particulier_sandbox.base_url, particulier_sandbox.token())


def test_a_registered_person(client, particulier_sandbox):
    registration = client.registration("camille.exemple")

    assert registration.registered and registration.category == 1
    [call] = particulier_sandbox.requests()
    assert call["path"] == STATUT_V2
    assert call["query"] == {"identifiant": "camille.exemple"}
    assert call["status"] == 200
    assert call["case"].endswith("200_inscrite_camille.yaml")


def test_a_person_who_left_answers_slowly(client):
    started = time.monotonic()
    registration = client.registration("bruno.exemple")

    assert registration.registered is False
    assert time.monotonic() - started >= 0.3  # the persona's latency_ms


def test_an_unknown_person_and_the_near_miss(client, particulier_sandbox):
    assert client.registration("camille.exempel") is None

    [call] = particulier_sandbox.requests(path=STATUT_V2)
    assert call["status"] == 404
    assert call["near_miss"]["different"] == ["identifiant"]


@pytest.mark.parametrize("fault", ["timeout", "unavailable", "provider_error"])
def test_provider_failures_are_reported(particulier_sandbox, fault):
    session = requests.Session()
    session.headers["X-Sandbox-Fault"] = fault
    client = JobSeekerClient(particulier_sandbox.base_url, particulier_sandbox.token(), session=session)

    with pytest.raises(ProviderUnavailable):
        client.registration("camille.exemple")
    assert particulier_sandbox.requests()[0]["fault"] == fault


def test_rate_limit_is_retried_once_then_reported(particulier_sandbox):
    session = requests.Session()
    session.headers["Prefer"] = "code=429"
    client = JobSeekerClient(particulier_sandbox.base_url, particulier_sandbox.token(), session=session)

    with pytest.raises(ProviderUnavailable):
        client.registration("camille.exemple")
    assert [c["status"] for c in particulier_sandbox.requests()] == [429, 429]


def test_a_token_without_the_scope_is_a_configuration_error(particulier_sandbox):
    client = JobSeekerClient(particulier_sandbox.base_url, particulier_sandbox.token(scopes=["cnaf_quotient_familial"]))

    with pytest.raises(NotAllowed):
        client.registration("camille.exemple")


def test_the_data_mask_follows_the_token_scopes(particulier_sandbox):
    token = particulier_sandbox.token(scopes=["pole_emploi_identite"])
    client = JobSeekerClient(particulier_sandbox.base_url, token)

    registration = client.registration("camille.exemple")

    # Without pole_emploi_inscription the dates are masked: the app cannot tell.
    assert registration.registered is False and registration.category is None


def test_clear_requests(client, particulier_sandbox):
    client.registration("camille.exemple")
    particulier_sandbox.clear_requests()
    assert particulier_sandbox.requests() == []


@pytest.mark.particulier_sandbox(bundled=False, faults=False)
def test_with_faults_off_the_header_is_ignored(particulier_sandbox):
    session = requests.Session()
    session.headers["X-Sandbox-Fault"] = "timeout"
    client = JobSeekerClient(particulier_sandbox.base_url, particulier_sandbox.token(), session=session)

    assert client.registration("camille.exemple").registered


@pytest.mark.parametrize("particulier_sandbox", [{"rate_limit": "1/minute"}], indirect=True)
def test_a_real_rate_limit(particulier_sandbox):
    client = JobSeekerClient(particulier_sandbox.base_url, particulier_sandbox.token(), retries=0)

    assert client.registration("camille.exemple").registered
    with pytest.raises(ProviderUnavailable):
        client.registration("camille.exemple")
