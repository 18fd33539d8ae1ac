"""gunicorn entry point: `gunicorn -c python:sandbox.gunicorn_conf app:app`."""
from sandbox import create_app

app = create_app()
