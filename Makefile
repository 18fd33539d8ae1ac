# particulier-sandbox: `make serve` and `make test` work from a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve token test test-fast install bench soak lint-docker clean

# The installation talks on stderr: `TOKEN=$$(make token)` captures the token alone.
$(STAMP): pyproject.toml
	@echo "installing into $(VENV)..." >&2
	@$(PYTHON) -m venv $(VENV) >&2
	@$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip >&2
	@$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]' >&2
	@touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(BIN)/particulier-sandbox serve

# One token, minted offline with the secret `make serve` uses; every scope, or SCOPE="s1 s2", TTL=seconds.
token: $(STAMP)
	@$(BIN)/particulier-sandbox token $(foreach s,$(SCOPE),--scope $(s)) $(if $(TTL),--ttl $(TTL))

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Everything not marked slow (no server, browser, redis-server or sandbox process): about a minute.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/run.py

soak: $(STAMP)
	$(BIN)/python bench/soak.py

lint-docker: $(STAMP)
	$(BIN)/hadolint Dockerfile

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
