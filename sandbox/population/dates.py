"""Relative dates in fixtures: `{{ first day of last month }}`, resolved on the day of the answer.

A payload string holding `{{ ... }}` is a template. Alone in its string it gives a typed value
(`{{ today | year }}` is the integer 2031 in 2031); inside a longer string it is replaced by its
text. The grammar (docs/fixtures.md, "Relative dates"):

    {{ <day> [+|- N day(s)|week(s)|month(s)|year(s)]... [| <step>]... }}

    day:  today | yesterday | tomorrow | YYYY-MM-DD
          | this|last|next month|year          (their first day)
          | first|last day of this|last|next month|year|school year
          | school year start | school year end  (of the current school year)
    step: start|end of month|year|school year   (rounding; several may follow each other)
          | date | datetime | year | month | day | school year | a strftime pattern with %  (the output, last)

A school year runs from 1 September to 31 August. Month and year arithmetic keeps the day of
the month, clamped to the month's length (31 January + 1 month = 28 or 29 February).

Templates are parsed once (a few hundred distinct texts in a whole population); a payload is
resolved once per (case, day) by its Case (fixtures.Case.payload_on). The day is production's
(production/clock.py), frozen by SANDBOX_TODAY=YYYY-MM-DD.
"""
from __future__ import annotations

import calendar
import datetime
import functools
import re

from ..production import clock

SCHOOL_YEAR_STARTS = 9  # 1 September
DOC = "see docs/fixtures.md, Relative dates"


class TemplateError(ValueError):
    pass


# --- calendar arithmetic -------------------------------------------------------------------
def add_months(day: datetime.date, months: int) -> datetime.date:
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    return datetime.date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


def month_start(day):
    return day.replace(day=1)


def month_end(day):
    return day.replace(day=calendar.monthrange(day.year, day.month)[1])


def school_year_start(day):
    year = day.year if day.month >= SCHOOL_YEAR_STARTS else day.year - 1
    return datetime.date(year, SCHOOL_YEAR_STARTS, 1)


def school_year_end(day):
    return add_months(school_year_start(day), 12) - datetime.timedelta(days=1)


ROUNDING = {
    "start of month": month_start,
    "end of month": month_end,
    "start of year": lambda d: d.replace(month=1, day=1),
    "end of year": lambda d: d.replace(month=12, day=31),
    "start of school year": school_year_start,
    "end of school year": school_year_end,
}

FORMATS = {
    "date": lambda d: d.isoformat(),
    "datetime": lambda d: f"{d.isoformat()}T00:00:00",
    "year": lambda d: d.year,
    "month": lambda d: d.month,
    "day": lambda d: d.day,
    "school year": lambda d: f"{school_year_start(d).year}-{school_year_start(d).year + 1}",
}

_SHIFT = {"last": -1, "this": 0, "next": 1}
_PERIOD = {"month": (1, month_start, month_end), "year": (12, ROUNDING["start of year"], ROUNDING["end of year"]),
           "school year": (12, school_year_start, school_year_end)}


def _anchor(words: str):
    """day -> date for the anchor `words` (lower-case, single spaces), or None if unknown."""
    if words == "today":
        return lambda d: d
    if words in ("yesterday", "tomorrow"):
        delta = datetime.timedelta(days=-1 if words == "yesterday" else 1)
        return lambda d: d + delta
    if words == "school year start":
        return school_year_start
    if words == "school year end":
        return school_year_end
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", words):
        try:
            fixed = datetime.date.fromisoformat(words)
        except ValueError:
            raise TemplateError(f"{words} is not a calendar date") from None
        return lambda d: fixed
    found = re.fullmatch(r"(?:(first|last) day of )?(this|last|next) (month|year|school year)", words)
    if found is None:
        return None
    edge, shift, period = found.groups()
    if edge is None and period == "school year":
        return None  # "this school year" says no day: school year start, or first day of this school year
    months, start, end = _PERIOD[period]
    round_to = end if edge == "last" else start
    offset = _SHIFT[shift] * months
    return lambda d: round_to(add_months(start(d), offset))


_DIRECTIVE = re.compile(r"%[YymdjBbAa%]")  # the strftime directives of a day that every platform has
_TERM = re.compile(r"\s*([+-])\s*(\d{1,4})\s*(day|days|week|weeks|month|months|year|years)\b")
_SPLIT = re.compile(r"[+-]\s*\d+\s*(?:day|week|month|year)")  # the first offset; "2024-09-01" holds none


class Template:
    """One `{{ ... }}`: a day relative to the day of the answer, and how it is written."""

    def __init__(self, text: str):
        self.text = text
        parts = [p.strip() for p in text.split("|")]
        expression, steps = " ".join(parts[0].lower().split()), parts[1:]
        cut = _SPLIT.search(expression)
        head = expression if cut is None else expression[:cut.start()].strip()
        tail = "" if cut is None else expression[cut.start():]
        self.anchor = _anchor(head)
        if self.anchor is None:
            raise TemplateError(f"unknown day {head!r}: write e.g. today, first day of last month, "
                                f"school year start, 2024-09-01 ({DOC})")
        self.offsets = []
        position = 0
        for term in _TERM.finditer(tail):
            if tail[position:term.start()].strip():
                break
            sign, amount, unit = term.groups()
            amount = int(amount) * (-1 if sign == "-" else 1)
            unit = unit.rstrip("s")
            self.offsets.append((amount * 7, "day") if unit == "week" else (amount, unit))
            position = term.end()
        if tail[position:].strip():
            raise TemplateError(f"cannot read {tail[position:].strip()!r}: write offsets as "
                                f"+ 3 days, - 1 month, - 2 years ({DOC})")
        self.rounding, self.format = [], FORMATS["date"]
        self.typed = False
        for index, step in enumerate(steps):
            words = " ".join(step.lower().split())
            last = index == len(steps) - 1
            if words in ROUNDING:
                self.rounding.append(ROUNDING[words])
            elif last and words in FORMATS:
                self.format = FORMATS[words]
            elif last and "%" in step:
                pattern = step
                wrong = _DIRECTIVE.sub("", pattern)
                if "%" in wrong:
                    raise TemplateError(f"bad date pattern {step!r}: use %Y %y %m %d %j %B %b %A %a %% ({DOC})")
                self.format = lambda d: d.strftime(pattern)
            elif words in FORMATS or "%" in step:
                raise TemplateError(f"the output format {step!r} must come last ({DOC})")
            else:
                raise TemplateError(f"unknown step {step!r}: one of {', '.join(ROUNDING)}, or an output: "
                                    f"{', '.join(FORMATS)}, or a pattern such as %d/%m/%Y ({DOC})")

    def day(self, today: datetime.date) -> datetime.date:
        day = self.anchor(today)
        for amount, unit in self.offsets:
            if unit == "day":
                day += datetime.timedelta(days=amount)
            else:
                day = add_months(day, amount * (12 if unit == "year" else 1))
        for round_to in self.rounding:
            day = round_to(day)
        return day

    def value(self, today: datetime.date):
        try:
            return self.format(self.day(today))
        except (OverflowError, ValueError) as exc:  # beyond year 1..9999
            raise TemplateError(f"{{{{ {self.text} }}}} is out of the calendar on {today}: {exc}") from None


# --- strings holding templates -------------------------------------------------------------
_BRACES = re.compile(r"\{\{(.*?)\}\}", re.S)


@functools.lru_cache(maxsize=4096)
def parse(text: str):
    """A string holding templates -> (whole, [(span, Template)]); TemplateError if one is wrong.
    `whole`: the string is one template alone (its value keeps its type, e.g. an integer)."""
    found = []
    for match in _BRACES.finditer(text):
        if not match.group(1).strip():
            raise TemplateError(f"empty {{{{ }}}} ({DOC})")
        found.append((match.span(), Template(match.group(1))))
    rest = _BRACES.sub("", text)
    if "{{" in rest or "}}" in rest:
        raise TemplateError(f"unbalanced {{{{ }}}} in {text!r} ({DOC})")
    whole = len(found) == 1 and found[0][0] == (0, len(text))
    return whole, found


def render(text: str, day: datetime.date):
    """The value of a string holding templates on `day`."""
    whole, found = parse(text)
    if whole:
        return found[0][1].value(day)
    out, position = [], 0
    for (start, end), template in found:
        out.append(text[position:start])
        out.append(str(template.value(day)))
        position = end
    out.append(text[position:])
    return "".join(out)


def is_template(value) -> bool:
    return isinstance(value, str) and "{{" in value


def scan(payload, where: str = "$.payload") -> tuple[bool, list]:
    """(whether `payload` holds templates, [(json path, message)] of each one that does not parse)."""
    out = []
    if not has_templates(payload):  # most payloads: one walk that builds no paths
        return False, out
    _visit(payload, where, out)
    return True, out


def problems(payload, where: str = "$.payload") -> list:
    """[(json path, message)] of every template of `payload` that does not parse."""
    return scan(payload, where)[1]


def _visit(node, where, out) -> bool:
    if isinstance(node, str):
        if "{{" not in node and "}}" not in node:
            return False
        try:
            parse(node)
        except TemplateError as exc:
            out.append((where, f"not a relative date: {exc}"))
        return True
    found = False
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        if has_templates(value):  # a path is spelt out only on the way to a template
            found = _visit(value, f"{where}[{key}]" if type(key) is int else f"{where}.{key}", out) or found
    return found


def has_templates(node) -> bool:
    kind = type(node)  # exact types: every payload is read from YAML or JSON; a load walks them all
    if kind is str:
        return "{{" in node or "}}" in node
    if kind is dict:
        node = node.values()
    elif kind is not list:
        return False
    for value in node:
        kind = type(value)
        if kind is str:
            if "{{" in value or "}}" in value:
                return True
        elif (kind is dict or kind is list) and has_templates(value):
            return True
    return False


def resolve(node, day: datetime.date, strict: bool = True):
    """`node` with every template replaced by its value on `day`; parts without templates are
    shared, not copied (the result must not be mutated). strict=False leaves a wrong template's
    text in place (the schema check of a file whose templates are reported elsewhere)."""
    if isinstance(node, str):
        if "{{" not in node:
            return node
        try:
            return render(node, day)
        except TemplateError:
            if strict:
                raise
            return node
    if isinstance(node, (dict, list)):
        mapping = isinstance(node, dict)
        out = None  # copied at the first change only: a payload without dates is returned as is
        for key, value in (node.items() if mapping else enumerate(node)):
            new = resolve(value, day, strict)
            if new is not value:
                if out is None:
                    out = dict(node) if mapping else list(node)
                out[key] = new
        return node if out is None else out
    return node
