"""Production's day: Time.zone.today, in Paris. SANDBOX_TODAY=YYYY-MM-DD, `freeze` or a test that
monkeypatches `today` fixes it for the whole process (relative dates, quotient familial bounds)."""
from __future__ import annotations

import datetime
import os
import time

from ..settings import ConfigError


def _frozen_day():
    value = os.environ.get("SANDBOX_TODAY", "").strip()
    if not value:
        return None
    try:
        return datetime.date.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"SANDBOX_TODAY={value!r} is not a date (YYYY-MM-DD)") from None


def _paris():
    try:
        from zoneinfo import ZoneInfo
        return ZoneInfo("Europe/Paris")
    except Exception:  # no time-zone database on this host: the host's own day
        return None


_FROZEN = _frozen_day()
_PARIS = _paris()


def freeze(day: datetime.date | None):
    """Answer as if on `day` from now on in this process (None: the real day again)."""
    global _FROZEN
    _FROZEN = day


_seen = (0.0, None)  # (monotonic time until which the day below holds, the day)


def today() -> datetime.date:
    """The day of the answer: production's day (Paris), or SANDBOX_TODAY when set."""
    global _seen
    if _FROZEN is not None:
        return _FROZEN
    now = time.monotonic()
    if now < _seen[0]:  # asked on every dated answer: the clock is read once a second
        return _seen[1]
    day = datetime.datetime.now(_PARIS).date() if _PARIS else datetime.date.today()
    _seen = (now + 1.0, day)
    return day
