"""The "try it" documentation page at /docs (filled in by the docs work)."""
from flask import Blueprint

bp = Blueprint("docs", __name__)
