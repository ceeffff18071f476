# Two commands: `make demo` runs the embedded facility, `make test` passes the tests. Both set up everything
# they need first and are quick when it is already there.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := .make
ARGS ?=
PYTEST_ARGS ?=

.PHONY: demo test bench lint setup system-deps venv node-deps controlplane clean

demo: setup
	$(BIN)/aifacility up $(ARGS)

test: setup
	$(BIN)/ruff check hub extensions tests
	$(BIN)/mypy
	$(BIN)/pytest -p no:cacheprovider $(PYTEST_ARGS)

bench: setup
	$(BIN)/python tests/bench/run.py $(ARGS)

lint: setup
	$(BIN)/ruff check hub extensions tests
	$(BIN)/mypy

setup: system-deps venv node-deps controlplane

# The real Kubernetes control plane and Kueue, built from their Go modules once per machine into
# ~/.cache/aifacility (about 10 minutes on 2 cores the first time, instant after), and helm, which renders the
# chart's Kueue and RBAC for the embedded facility.
controlplane: venv
	@$(BIN)/python -m aifacility.embedded.controlplane.build
	@bash charts/install-helm.sh >/dev/null

system-deps:
	@bash .ci/install-system-deps

# The virtualenv is rebuilt only when pyproject.toml changes.
venv: $(STAMP)/venv
$(STAMP)/venv: pyproject.toml
	@mkdir -p $(STAMP)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# (this machine's pip.conf names local mirrors that may be absent: their warnings are noise)
	set -o pipefail; $(BIN)/pip install -q --disable-pip-version-check -e '.[hub,notebook,offload,dev]' 2>&1 \
	  | { grep -v '^WARNING: Location' || true; }
	@touch $@

# The embedded OIDC provider (npm oidc-provider), installed from its lock file.
OIDC_DIR := hub/aifacility/oidc
node-deps: $(OIDC_DIR)/node_modules/.package-lock.json
$(OIDC_DIR)/node_modules/.package-lock.json: $(OIDC_DIR)/package-lock.json
	npm ci --prefix $(OIDC_DIR) --silent --no-audit --no-fund
	@touch $@

clean:
	rm -rf $(VENV) $(STAMP) test-output
