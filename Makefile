# Fleetdeck: every target sets itself up on a fresh Debian machine with Python 3.11.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: run demo test test-fast lint system-deps bench docs clean app-bundle

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[gui,nvidia,dev]'
	touch $@

## run: a local agentd and the app connected to it (falls back to `agentctl top` without a display);
##      PORT=7720 picks the agentd port (a taken default port is replaced by a free one, and said so)
run: $(STAMP)
	$(PY) -m agentd.runlocal $(if $(PORT),--port $(PORT))

## demo: the app with 3 local daemons on simulated GPUs and example workloads; writes
##       ./demo-cluster.toml (or demo-cluster-2.toml... when another demo runs) for agentctl --cluster
demo: $(STAMP)
	$(VENV)/bin/fleetdeck --demo $(or $(N),3)

## system-deps: Debian packages the tests use (Slurm, promtool, Xvfb libs, validators)
system-deps:
	bash scripts/system-deps.sh

## test: the static checks (make lint), then the whole suite
test: $(STAMP) system-deps lint
	$(PY) -m pytest $(PYTEST_ARGS)

## test-fast: the tests that start no process (no agentd, jobs, Slurm...): seconds, not minutes
test-fast: $(STAMP)
	$(PY) -m pytest -m "not procs and not slurm" $(PYTEST_ARGS)

## lint: import-layer contracts, ruff (style and likely bugs), mypy --strict on agentd/ (seconds)
lint: $(STAMP)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

docs: $(STAMP)
	$(PY) -m agentd.protocol.docs > docs/protocol.md

bench: $(STAMP)
	$(PY) bench/agentd_overhead.py
	$(PY) bench/pause_latency.py
	$(PY) bench/recorder.py
	$(PY) bench/migrate.py
	$(PY) bench/gui_frame.py

## app-bundle: a standalone fleetdeck + agentctl in dist/ (PyInstaller, ~2-3 minutes)
app-bundle: $(STAMP)
	$(VENV)/bin/pyinstaller --noconfirm --clean --distpath dist --workpath build/pyinstaller packaging/pyinstaller/fleetdeck.spec

clean:
	rm -rf $(VENV) build dist *.egg-info
