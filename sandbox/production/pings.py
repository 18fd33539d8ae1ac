"""Provider pings as production answers them (table: data/pings.yml).

`GET /api/:provider/ping` (siade/app/services/ping_service.rb#perform), whatever the provider's state:
  ok           200 {"status": "ok", "last_update", "last_ok_status"}
  maintenance  200 {"status": "maintenance", "until", "last_update", "last_ok_status"}
  failure      502 {"status": "bad_gateway", "last_update", "last_ok_status"}
  unknown      404 {}
`GET /api/pings` (handle_ping_providers.rb#valid_pings): 200 [{"name", "url"}] for each ping with a
status page name.

Production asks the provider; the sandbox has no provider to ask, so a provider is `ok` unless
the sandbox was told otherwise: for the whole run (setting `provider_states`,
`--provider-state KEY=maintenance|failure`), or for one ping (`X-Sandbox-Fault` on the ping).
A provider put in a state for the run answers that state on its data routes too
(`route_fault`), so monitoring and the calls it guards see the same outage.
"""
from __future__ import annotations

import datetime
import threading
from pathlib import Path
from zoneinfo import ZoneInfo

import yaml

from .provider_errors import RULES as PROVIDER_RULES

TABLE_FILE = Path(__file__).parent / "data" / "pings.yml"
STATES = ("ok", "maintenance", "failure")
PARIS = ZoneInfo("Europe/Paris")  # production's config.time_zone: its timestamps carry Paris' offset


def _load(path=TABLE_FILE):
    with open(path, "rb") as f:
        return yaml.safe_load(f)


TABLE = _load()
PROVIDERS: dict = TABLE["providers"]


class UnknownProvider(ValueError):
    """A ping key production does not have (the message names the known ones)."""


def check_states(states: dict) -> dict:
    """{ping key: state} as given by the settings, refused when a key or a state is unknown."""
    for key, state in states.items():
        if key not in PROVIDERS:
            raise UnknownProvider(f"unknown provider {key!r} (known: {', '.join(sorted(PROVIDERS))})")
        if state not in STATES:
            raise UnknownProvider(f"unknown state {state!r} for {key} (known: {', '.join(STATES)})")
    return {key: state for key, state in states.items() if state != "ok"}


def _timestamp(moment: datetime.datetime) -> str:
    """As Rails renders a TimeWithZone in JSON: milliseconds and the Paris offset."""
    return moment.astimezone(PARIS).isoformat(timespec="milliseconds")


def _maintenance_seconds(provider: str) -> int:
    window = (PROVIDER_RULES.get("maintenance_windows") or {}).get(provider)
    if not window:
        return int(TABLE["default_maintenance_seconds"])
    start, end = (datetime.datetime.strptime(window[k], "%H:%M") for k in ("from", "to"))
    return int(((end - start) % datetime.timedelta(days=1)).total_seconds())


class Pings:
    """The ping answers of one sandbox. `states`: the providers put in maintenance or failure for
    the run (check_states). The last ok answer is remembered per process, as production keeps
    it in Redis (`last_ok_status`); before any, it is the ping's own time, as production's."""

    def __init__(self, states: dict | None = None, clock=None):
        self.states = check_states(dict(states or {}))
        self.clock = clock or (lambda: datetime.datetime.now(datetime.timezone.utc))
        self._last_ok: dict[str, datetime.datetime] = {}
        self._lock = threading.Lock()
        self._by_operation: dict[str, str] = {}
        for key, state in self.states.items():
            for operation in PROVIDERS[key]["operations"]:
                # an operation watched by two pings in different states: maintenance wins (a 503
                # says more than a 502 about when to retry)
                if self._by_operation.get(operation) != "maintenance":
                    self._by_operation[operation] = state

    def route_fault(self, operation_id: str) -> str | None:
        """The provider fault kind (data/provider_errors.yml) a data route answers, None when its
        provider is up."""
        state = self._by_operation.get(operation_id)
        return TABLE["route_faults"][state] if state else None

    def state(self, key: str, asked: str | None = None) -> str:
        """The state a ping answers: the one asked for this call, else the run's, else ok."""
        return asked or self.states.get(key, "ok")

    def answer(self, key: str, asked: str | None = None) -> tuple[int, dict]:
        """(status, body) of `GET /api/<key>/ping`."""
        if key not in PROVIDERS:
            return 404, {}
        now = self.clock()
        state = self.state(key, asked)
        with self._lock:
            if state == "ok":
                self._last_ok[key] = now
            last_ok = self._last_ok.get(key, now)
        common = {"last_update": _timestamp(now), "last_ok_status": _timestamp(last_ok)}
        if state == "maintenance":
            until = now + datetime.timedelta(seconds=_maintenance_seconds(PROVIDERS[key]["maintenance"]))
            return 200, {"status": "maintenance", "until": _timestamp(until), **common}
        if state == "failure":
            return 502, {"status": "bad_gateway", **common}
        return 200, {"status": "ok", **common}


def index(base_url: str) -> list:
    """`GET /api/pings`: every ping with a status page name and its absolute URL."""
    base = base_url.rstrip("/")
    return [{"name": entry["name"], "url": f"{base}/api/{key}/ping"}
            for key, entry in PROVIDERS.items() if entry.get("name")]
