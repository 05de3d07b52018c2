# `make test` and `make run` work from a clean clone: they create .venv and
# install caffezoo with every extra the tests and the server need.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install test test-fast lint format run bench clean proto bair cluster cluster-stop

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[server,run,test]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# The edit-test loop: everything but the PostgreSQL and browser tests.
test-fast: $(STAMP)
	$(PY) -m pytest -m "not postgresql and not browser" $(PYTEST_ARGS)

LINTED := src tests benchmarks scripts

lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)

format: $(STAMP)
	$(VENV)/bin/ruff check --fix $(LINTED)
	$(VENV)/bin/ruff format $(LINTED)

# The zoo on http://127.0.0.1:8000 with embedded SQLite (under CAFFEZOO_HOME),
# seeded with the bundled models; seeding again on each start changes nothing.
run: $(STAMP)
	$(VENV)/bin/caffezoo serve --seed-bundled --host 127.0.0.1 --port 8000

# A zoo cluster on 127.0.0.1 (PostgreSQL, Ceph's S3 gateway, 2 replicas, nginx); see README.
CLUSTER_DIR ?= .cluster
CLUSTER_ARGS ?=

cluster: $(STAMP)
	$(PY) scripts/cluster.py start --dir $(CLUSTER_DIR) $(CLUSTER_ARGS)

cluster-stop:
	$(PY) scripts/cluster.py stop --dir $(CLUSTER_DIR)

bench: $(STAMP)
	for b in benchmarks/*.py; do $(PY) $$b || exit 1; done

# The generated protobuf module, from the project's caffe.proto. protoc 25
# (grpcio-tools 1.62) writes code that runs on every protobuf from 4.25 to 7.x;
# newer protoc pins the runtime to its own version or later.
proto: $(STAMP)
	$(PY) -m pip install --quiet --no-warn-conflicts --target .cache/protoc25 'grpcio-tools==1.62.3'
	PYTHONPATH=.cache/protoc25 $(PY) -m grpc_tools.protoc -Isrc/caffezoo/caffe \
		--python_out=src/caffezoo/caffe caffe.proto

# The bundled BAIR models' prototxt files, from their Python definitions.
bair: $(STAMP)
	$(PY) -m caffezoo.caffe.bair

clean:
	rm -rf $(VENV) .pytest_cache build dist src/*.egg-info
