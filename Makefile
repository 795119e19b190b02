# raftkv developer tasks. `make run` starts a local 3-node cluster; `make test` runs the suite.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
CONFIG ?= conf/cluster.toml
SEEDS  ?= 2000
SEED   ?=
DURATION ?= 600
NODES  ?=
PYTEST_ARGS ?=

.PHONY: install build run stop status test sim chaos coverage bench bench-compare bench-security bench-watch budget lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed  ## create the venv and install raftkv with its test tools

build: install  ## build a wheel into dist/
	$(PY) -m pip wheel --quiet --no-deps -w dist .

run: install  ## start the local 3-node cluster of conf/cluster.toml in the background
	$(VENV)/bin/raftkvd cluster start --config $(CONFIG)
	$(VENV)/bin/raftctl --config $(CONFIG) status

stop:  ## stop the local cluster (by the pids it recorded)
	$(VENV)/bin/raftkvd cluster stop --config $(CONFIG)

status: install
	$(VENV)/bin/raftctl --config $(CONFIG) status

test: install  ## the whole suite: core, simulator, storage, CLI, real processes, web view
	bash scripts/ensure-test-tools.sh  # chromium, openssl, curl, node, systemd-analyze (root: apt-get)
	$(PY) -m pytest -q $(PYTEST_ARGS)

sim: install  ## more simulator seeds: make sim SEEDS=20000 (or SEED=1234 NODES=3 to replay one)
	$(PY) -m tests.sim.run --seeds $(SEEDS) $(if $(SEED),--seed $(SEED),) $(if $(NODES),--nodes $(NODES),)

chaos: install  ## real clusters under faults, history checked: make chaos DURATION=600 (NODES=3|5, 0 alternates)
	$(PY) -m tests.chaos.run --duration $(DURATION) --nodes $(if $(NODES),$(NODES),0)

coverage: install  ## line coverage of the consensus core by its tests
	$(PY) -m pytest -q tests/core tests/sim --cov=raftkvd/raft --cov-report=term-missing

bench: install  ## throughput and latency of a fresh local cluster (medians of 5 runs)
	$(PY) -m tests.bench.run

bench-compare: install  ## raftkv against etcd, side by side (wrk; medians of 3 passes each)
	$(PY) -m tests.bench.compare $(if $(PASSES),--passes $(PASSES),)

bench-security: install  ## the cost of SPEC §8: raftkv secured (Curve, HTTPS, tokens) against raftkv open
	$(PY) -m tests.bench.compare --security $(if $(PASSES),--passes $(PASSES),)

bench-watch: install  ## 1,000 watchers on one node at 1,000 writes/s: delivery latency, write rate, memory (SHARED=1: one prefix)
	$(PY) -m tests.bench.watchers $(if $(PASSES),--passes $(PASSES),) $(if $(SHARED),--shared --rate $(or $(RATE),100),$(if $(RATE),--rate $(RATE),))

budget: install  ## where the time of one write goes, REST and native (stage timestamps; docs/perf.md)
	$(PY) -m tests.bench.budget $(if $(WRITES),--writes $(WRITES),)

lint: install
	$(VENV)/bin/ruff check raftkvd raftctl tests

clean: stop
	rm -rf data dist build *.egg-info .pytest_cache .coverage
