# Two commands: `make demo` runs the embedded facility, `make test` passes the tests. Both set up everything
# they need first and are quick when it is already there.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := .make
ARGS ?=
PYTEST_ARGS ?=

.PHONY: demo test bench lint setup system-deps venv node-deps lab-extension controlplane clean

demo: setup
	$(BIN)/aifacility up $(ARGS)

test: setup
	$(BIN)/ruff check hub extensions tests
	$(BIN)/mypy
	cd $(LAB_DIR) && PATH="$(abspath $(BIN)):$$PATH" jlpm test
	$(BIN)/pytest -p no:cacheprovider $(PYTEST_ARGS)

bench: setup
	$(BIN)/python tests/bench/run.py $(ARGS)

lint: setup
	$(BIN)/ruff check hub extensions tests
	$(BIN)/mypy

setup: system-deps venv node-deps lab-extension controlplane

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

# The JupyterLab extension (status bar, jobs sidebar, notifications) and its server extension: built with
# JupyterLab's toolchain (jlpm, from its lock file) and installed into the environment the sessions run in.
LAB_DIR := extensions/aifacility_lab
LAB_SOURCES := $(LAB_DIR)/package.json $(LAB_DIR)/yarn.lock $(LAB_DIR)/pyproject.toml $(wildcard $(LAB_DIR)/src/*.ts \
  $(LAB_DIR)/src/*.tsx $(LAB_DIR)/style/* $(LAB_DIR)/aifacility_lab/*.py $(LAB_DIR)/jupyter-config/*/*)
lab-extension: $(STAMP)/lab-extension
$(STAMP)/lab-extension: $(STAMP)/venv $(LAB_SOURCES)
	@echo "building the JupyterLab extension (jlpm install, build; a minute or two the first time)"
	@# (its scripts call jlpm and jupyter-builder by name: the environment's bin first on PATH)
	cd $(LAB_DIR) && export PATH="$(abspath $(BIN)):$$PATH" && jlpm install --immutable && jlpm build:prod
	$(BIN)/pip install -q --disable-pip-version-check --no-build-isolation --no-deps --force-reinstall ./$(LAB_DIR)
	@touch $@

clean:
	rm -rf $(VENV) $(STAMP) test-output $(LAB_DIR)/node_modules $(LAB_DIR)/lib $(LAB_DIR)/aifacility_lab/labextension
