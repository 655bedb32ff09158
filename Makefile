# Two entry points: `make demo` (the local stack with a live demo channel) and
# `make test` (the whole suite). Both do all set-up on a fresh Debian machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test setup system-deps lint clean protos proto-check bench-deps

demo: setup
	$(BIN)/livemesh demo

test: setup system-deps browser-deps proto-check lint
	$(BIN)/python -m pytest

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Real clients the tests drive, from Debian's packages when missing: ffprobe/ffmpeg, curl
# and jq (the README's commands, which tests/test_readme.py runs verbatim), and ip (iproute2:
# the regions' network namespaces in tests/test_regions_netns.py).
system-deps:
	@missing=""; command -v ffprobe >/dev/null || missing="ffmpeg"; \
	command -v curl >/dev/null || missing="$$missing curl"; \
	command -v jq >/dev/null || missing="$$missing jq"; \
	command -v ip >/dev/null || missing="$$missing iproute2"; \
	[ -z "$$missing" ] || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $$missing >/dev/null; }

# The browser player (player/): Debian's Chromium, driven by the playwright package (dev
# extras), and dash.js from npm at the version player/package-lock.json pins.
browser-deps: setup
	@missing=""; command -v chromium >/dev/null || missing="chromium"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	[ -z "$$missing" ] || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $$missing >/dev/null; }
	@[ player/node_modules/.package-lock.json -nt player/package-lock.json ] || \
	  { cd player && npm ci --no-audit --no-fund --loglevel=error; }

# The API: protos/ is the only source; stubs are generated, and CI fails when they are stale.
protos: setup
	scripts/gen_protos.sh

proto-check: setup
	$(BIN)/buf lint
	scripts/buf_breaking.sh
	scripts/gen_protos.sh --check

# ruff (check and format) over the tree; mypy over every hand-written package (pyproject's
# [tool.mypy] files, the kernel held to --strict's checks) and over the benchmarks, from
# their folder (they are scripts that import bench/_harness.py)
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	cd bench && ../$(BIN)/mypy .

clean:
	rm -rf $(VENV) build *.egg-info

# What the edge benchmarks compare against and load with (bench/edge_cached.py): nginx, wrk.
bench-deps:
	@command -v nginx >/dev/null && command -v wrk >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq nginx-light wrk >/dev/null; }
