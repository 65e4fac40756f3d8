# Two commands: `make demo` (install, convert the sample slides, serve) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export IAIN_SAMPLE_SLIDES ?= $(abspath ../shared/slides)
DATA ?= data
# `make demo` serves Caen :8000, Rouen :8001, Lille :8002; DEMO_ARGS=--single-node: one node.
DEMO_ARGS ?=
PYTEST_ARGS ?=

.PHONY: install demo test lint typecheck pytest bench-deps clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile package.json package-lock.json
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU build of torch from this machine's wheel cache; the Dockerfile installs the CUDA build.
	$(PY) -m pip install -q torch==2.13.0 torchvision==0.28.0
	$(PY) -m pip install -q -e '.[dev]'
	# The viewer's OpenSeadragon, exactly as package-lock.json pins it (served from node_modules).
	npm ci --no-audit --no-fund
	# Browser tests drive Debian's chromium; Playwright never downloads a browser of its own.
	command -v chromium || (apt-get update && apt-get install -y chromium)
	# The database tests start Debian's PostgreSQL 15 in a temporary directory.
	test -x /usr/lib/postgresql/15/bin/initdb || (apt-get update && apt-get install -y postgresql-15)
	# The signed-tile tests run Debian's nginx (secure_link) in front of the app.
	test -x /usr/sbin/nginx || (apt-get update && apt-get install -y nginx)
	touch $@

demo: install
	$(PY) -m viewer.cli demo --slides "$(IAIN_SAMPLE_SLIDES)" --data "$(DATA)" $(DEMO_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy

pytest: install
	$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest: no tests collected"; exit 0; fi; exit $$rc

test: lint typecheck pytest

# Peers the benchmarks run beside IAIN: libvips 8.18 (pyvips wheel), Debian's vips 8.14, nginx, wrk.
bench-deps: install
	$(PY) -m pip install -q -e '.[dev,bench]'
	command -v vips && command -v nginx && command -v wrk || (apt-get update && apt-get install -y libvips-tools nginx wrk)

clean:
	rm -rf $(VENV) node_modules $(DATA) .mypy_cache .ruff_cache
