# particulier-sandbox: the API Particulier sandbox as a container, for CI service containers
# and shared team instances. Configuration is by environment (SANDBOX_*; see docs/ci.md).
#   docker build -t particulier-sandbox .
#   docker run -p 8000:8000 -e SANDBOX_TOKEN_SECRET=... particulier-sandbox
# Any Debian-like base with python3 3.11+ and its venv module builds it too (`--from`):
# tests/test_image.py builds it with podman from a bare Debian made by mmdebstrap.
# Your own cases: mount a fixture folder at /srv/sandbox/fixtures (or add one to
# SANDBOX_FIXTURES, os.pathsep-separated); your own spec: mount a folder holding open-api.yml
# at /srv/sandbox/spec (or set SANDBOX_SPEC to the file(s)).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# An unprivileged user: the sandbox needs no root, and a CI runner should not grant it.
RUN groupadd --system --gid 10001 sandbox \
    && useradd --system --create-home --uid 10001 --gid 10001 --shell /usr/sbin/nologin sandbox

WORKDIR /opt/particulier-sandbox
COPY pyproject.toml README.md ./
COPY spec ./spec
COPY fixtures ./fixtures
# sandbox/bundled links to ../spec and ../fixtures: the installed package carries them too
COPY sandbox ./sandbox
# A venv of its own rather than the base's Python: python:3.11-slim and Debian's python3 (which
# refuses system-wide pip installs) then take the same steps, and the image's Python packages
# are exactly the project's.
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir . \
    && rm -rf build ./*.egg-info
ENV PATH=/opt/venv/bin:$PATH

# The bundled spec and fixtures live outside the package: they are data a user may replace.
COPY spec /srv/sandbox/spec
COPY fixtures /srv/sandbox/fixtures
RUN mkdir -p /srv/sandbox/data && chown 10001:10001 /srv/sandbox/data

ENV SANDBOX_SPEC=/srv/sandbox/spec/open-api.yml \
    SANDBOX_FIXTURES=/srv/sandbox/fixtures \
    SANDBOX_DATA_DIR=/srv/sandbox/data \
    SANDBOX_PORT=8000 \
    SANDBOX_WORKERS=2 \
    SANDBOX_ACCESS_LOG=-

USER 10001:10001
WORKDIR /srv/sandbox
EXPOSE 8000

# No curl in the slim image: the health check is Python's own urllib, on the port in use.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/api/ping' % os.environ.get('SANDBOX_PORT', '8000'), timeout=4)"]

# The same command the tests run (tests/test_container_command.py).
CMD ["particulier-sandbox", "serve", "--host", "0.0.0.0"]
