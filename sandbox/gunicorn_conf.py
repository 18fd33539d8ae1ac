"""gunicorn settings for a plain `gunicorn -c python:sandbox.gunicorn_conf app:app`: the same as
`particulier-sandbox serve` (sandbox/server.py), from the SANDBOX_* environment."""
from sandbox.server import gunicorn_options
from sandbox.settings import Settings

globals().update(gunicorn_options(Settings.from_env()))
