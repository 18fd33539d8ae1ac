"""The "downstream application" of the example: a service that asks API Particulier whether
a person is registered at France Travail. It knows nothing about the sandbox: its tests
point it at one (see test_job_seeker.py) exactly as production config would point it at
https://particulier.api.gouv.fr.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import requests

STATUT_V2 = "/api/v2/situations-pole-emploi"


class ProviderUnavailable(Exception):
    """France Travail (or API Particulier) cannot answer now: the caller should retry later."""


class NotAllowed(Exception):
    """The token does not open this data: a configuration problem, not a person's situation."""


@dataclass
class Registration:
    identifiant: str
    registered: bool
    category: int | None


class JobSeekerClient:
    def __init__(self, base_url: str, token: str, session: requests.Session | None = None,
                 retries: int = 1, timeout: float = 5.0):
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.session = session or requests.Session()
        self.retries = retries
        self.timeout = timeout

    def registration(self, identifiant: str) -> Registration | None:
        """The person's registration, or None when France Travail does not know them."""
        answer = self._get(STATUT_V2, {"identifiant": identifiant})
        if answer.status_code == 404:
            return None
        if answer.status_code == 401:
            raise NotAllowed(answer.json().get("reason", "access denied"))
        if answer.status_code in (502, 503, 504):
            raise ProviderUnavailable(answer.json().get("reason", answer.status_code))
        answer.raise_for_status()
        body = answer.json()
        return Registration(identifiant=body.get("identifiant", identifiant),
                            registered=bool(body.get("dateInscription")) and not body.get("dateCessationInscription"),
                            category=body.get("codeCategorieInscription"))

    def _get(self, path, params):
        for attempt in range(self.retries + 1):
            answer = self.session.get(self.base_url + path, params=params, timeout=self.timeout,
                                      headers={"X-Api-Key": self.token})
            if answer.status_code != 429 or attempt == self.retries:
                break
            # API Particulier says when to come back; never hammer it.
            time.sleep(min(float(answer.headers.get("Retry-After", "1")), 5))
        if answer.status_code == 429:
            raise ProviderUnavailable("rate limited by API Particulier")
        return answer
