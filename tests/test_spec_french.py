"""The "try it" page is French: what it shows of the bundled spec (sections, routes, parameters,
answers, headers, authentication) is described in French. README and docs/ stay English."""
from __future__ import annotations

import re

import yaml

from sandbox.settings import BUNDLED_SPEC

# words an English sentence can hardly do without, and a French one never uses
ENGLISH = re.compile(r"\b(the|of|and|is|are|with|when|by|for|to|an|which|from|this|that|its|their)\b", re.I)


def _texts(node, where=""):
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("description", "summary", "title") and isinstance(value, str):
                yield where + "/" + key, value
            else:
                yield from _texts(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _texts(value, f"{where}[{index}]")


def test_what_the_page_shows_of_the_spec_is_french():
    spec = yaml.safe_load(BUNDLED_SPEC.read_text())
    texts = list(_texts(spec))  # the answers' schemas too: the page shows them under each route
    assert len(texts) > 600
    english = [(where, text) for where, text in texts if ENGLISH.search(text)]
    assert not english, english[:10]
    assert all(not ENGLISH.search(tag["name"]) for tag in spec["tags"])
    declared = {tag["name"] for tag in spec["tags"]}
    used = {tag for item in spec["paths"].values() for op in item.values() if isinstance(op, dict)
            for tag in op.get("tags", ())}
    assert used <= declared, sorted(used - declared)  # a section the page shows is one of the French ones


def test_the_served_page_s_own_additions_are_french(app):
    served = yaml.safe_load(app.test_client().get("/openapi.yml").get_data())
    retired = served["paths"]["/api/v2/composition-familiale"]["get"]
    assert retired["summary"] == "Route retirée — Quotient familial CAF (numéro d'allocataire)"
    assert not ENGLISH.search(retired["description"])
