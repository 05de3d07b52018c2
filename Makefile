# `make test` and `make run` work from a clean clone: they create .venv and
# install caffezoo with every extra the tests and the server need.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install test run bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[server,run,test]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

run: $(STAMP)
	$(VENV)/bin/caffezoo list
	$(VENV)/bin/caffezoo validate $$($(VENV)/bin/caffezoo list --json | $(PY) -c 'import json,sys; print(" ".join(m["name"] for m in json.load(sys.stdin)))')

bench: $(STAMP)
	for b in benchmarks/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache build dist src/*.egg-info
