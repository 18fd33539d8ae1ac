"""What to fix, for each parameter error production's validators report.

Production's texts are kept in the body as they are, even where they say "manquant" for a value
that was sent but is malformed. A refused call also gets these hints (X-Sandbox-Hint, rendered by
sandbox/api/pipeline.py): for each error, the query parameters it judges with the values
received, and the format production expects. The formats are data
(data/parameter_formats.yml, keyed like parameter_errors.yml); validation_rules.check says which
validator reported which error and how the route names its query parameters.
"""
from __future__ import annotations

import calendar
import datetime
from pathlib import Path

import yaml

from . import clock

FORMATS = yaml.safe_load((Path(__file__).parent / "data" / "parameter_formats.yml").read_text(encoding="utf-8"))
MAX_VALUE = 64  # characters of a received value repeated in the hint (a header stays small)


def _years_back(day: datetime.date, years: int) -> datetime.date:
    year = day.year - years  # 29 February, years back, is the 28th
    return day.replace(year=year, day=min(day.day, calendar.monthrange(year, day.month)[1]))


def placeholders(day: datetime.date) -> dict:
    """The values a format may name, on production's day."""
    return {"year": day.year, "year_minus_1": day.year - 1, "year_minus_2": day.year - 2, "month": day.month,
            "yesterday": (day - datetime.timedelta(days=1)).isoformat(),
            # the DSNJ's 16 to 25 years (dsnj_date): 25 until the eve of the 26th birthday
            "dsnj_born_after": (_years_back(day, 26) + datetime.timedelta(days=1)).isoformat(),
            "dsnj_born_until": _years_back(day, 16).isoformat()}


def _shown(value):
    """A received value as the hint repeats it: strings cut to MAX_VALUE characters."""
    if isinstance(value, list):
        return [_shown(v) for v in value[:8]]
    if isinstance(value, str) and len(value) > MAX_VALUE:
        return value[:MAX_VALUE] + "..."
    return value


def hints(found: list, names: dict, query: dict, headers) -> list:
    """[{code, parameters: {query name: value received (None: absent)}, expected}], one per error.

    `found`: [(validator name, error field, its code)] in the order production reports them; `names`:
    production's name -> the query parameter the route reads it from; `query`: the query as
    Rails reads it (rails_params)."""
    values = placeholders(clock.today())
    out = []
    for rule, field, code in found:
        entry = FORMATS.get(field)
        if entry is None:
            continue
        entry = {**entry, **(entry.get("by_rule") or {}).get(rule, {})}
        parameters = {}
        if entry.get("header"):
            parameters[entry["header"]] = _shown(headers.get(entry["header"]) if headers is not None else None)
        for name in entry.get("params") or ():
            sent = names.get(name)
            if sent is None or sent in parameters:
                continue  # not a parameter of this route, or one already named (a date read in three parts)
            value = query.get(sent)
            parameters[f"{sent}[]" if isinstance(value, list) else sent] = _shown(value)
        out.append({"code": code, "parameters": parameters,
                    "expected": entry["expected"].format(**values)})
    return out
