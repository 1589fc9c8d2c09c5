# Concord's two set-up commands are `make run` and `make test`; the rest are
# what they are built from.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DATA := data

.PHONY: run test lint bench clean

# The venv's bundled pip installs everything here; upgrading it first cost a
# network round trip and a reinstall on every fresh clone (`make run` must
# answer /health within 15 s, docs/setup/installation.md).
$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# No version check (another index request) and never a prompt. Build isolation
# stays: a fresh venv lacks the setuptools>=68 and wheel the build needs.
PIP_INSTALL := $(PY) -m pip install --quiet --no-input --disable-pip-version-check

# Reinstall when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(PIP_INSTALL) -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(VENV)/bin/python
	$(PIP_INSTALL) -e '.[test]'
	touch $@ $(VENV)/.installed

## make run: install into .venv, generate ./data on first run, start a node on SQLite.
run: $(VENV)/.installed
	@if [ ! -f $(DATA)/homeserver.yaml ]; then \
		$(VENV)/bin/homeserver generate-config --server-name 127.0.0.1:8448 \
			--data-dir $(DATA) --output $(DATA)/homeserver.yaml; \
	fi
	exec $(VENV)/bin/homeserver run --config $(DATA)/homeserver.yaml

## make test: install the test extra, make sure PostgreSQL answers, run pytest then trial.
test: $(VENV)/.installed-test
	scripts/with-postgres.sh sh -c '$(PY) -m pytest; p=$$?; $(PY) -m twisted.trial --reactor=asyncio tests.trial; t=$$?; [ $$p -eq 0 ] && [ $$t -eq 0 ]'

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy --strict federation/

bench: $(VENV)/.installed-test
	$(PY) bench/verify.py

clean:
	rm -rf $(VENV) .pytest_cache _trial_temp build *.egg-info
