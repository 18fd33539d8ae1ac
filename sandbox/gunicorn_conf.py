"""gunicorn settings for a plain `gunicorn -c python:sandbox.gunicorn_conf app:app`: the same as
`particulier-sandbox serve` (sandbox/server.py), from the SANDBOX_* environment."""
from sandbox.metrics import prepare_multiprocess
from sandbox.server import gunicorn_options
from sandbox.settings import Settings

prepare_multiprocess()  # before app:app is imported (preloaded): the workers' metrics folder
globals().update(gunicorn_options(Settings.from_env()))
