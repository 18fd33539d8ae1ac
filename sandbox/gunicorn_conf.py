"""gunicorn settings shared by `particulier-sandbox serve` and the Docker image.

Everything comes from the SANDBOX_* environment, so the image's command and the one the tests
run are the same. The app is preloaded: specs and fixtures are read once in the master and
shared by the forked workers; a broken set stops the master before any worker starts.
"""
import gc
import os

bind = f"{os.environ.get('SANDBOX_HOST', '127.0.0.1')}:{os.environ.get('SANDBOX_PORT', '8000')}"
workers = int(os.environ.get("SANDBOX_WORKERS", "2"))
threads = int(os.environ.get("SANDBOX_THREADS", "8"))
worker_class = "gthread"
preload_app = True
keepalive = 5
timeout = 60
graceful_timeout = 30  # SIGTERM: in-flight requests get this long to finish
# No query string in the access log: v2 accepts `?token=`, and a token is never written to a log.
accesslog = os.environ.get("SANDBOX_ACCESS_LOG") or None
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms'
errorlog = "-"
loglevel = os.environ.get("SANDBOX_LOG_LEVEL", "info")
# A query string up to gunicorn's maximum (8190 bytes) reaches the routes, which answer it in
# their own format; a longer one, or headers gunicorn refuses, get errors.write_server_error.
limit_request_line = 8190


def pre_fork(server, worker):
    # What the master loaded (specs, fixtures, compiled validators) lives as long as the
    # workers: out of the collector's sight, a full collection no longer walks it on every
    # worker (3 % of a worker's CPU under load), nor writes to its pages, which stay shared.
    # (A set that hot reload replaces is still freed by reference counting; only cycles in
    # the first set would outlive it, once.)
    gc.freeze()


def post_fork(server, worker):
    from sandbox.errors import install_server_error_pages
    install_server_error_pages()
    # The worker's own set-up (store connections, fixture watcher) at once, not on its first
    # call: a worker no call has reached yet must still follow the fixture edits, or its first
    # answers would come from the set the master loaded.
    sandbox = getattr(worker.app.wsgi(), "extensions", {}).get("sandbox")
    if sandbox is not None:
        sandbox.in_worker()
