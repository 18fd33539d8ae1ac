"""gunicorn entry point: `gunicorn -c python:sandbox.gunicorn_conf app:app`."""
from sandbox import create_app

app = create_app(start=False)  # each worker starts its threads after the fork (gunicorn_conf's post_fork)
