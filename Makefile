# Every target sets itself up from a clean checkout: CI runs `make test` on a fresh clone.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
ARGS ?=

.PHONY: demo test test-lowest lint typecheck unit serve check bench-timers bench-ingest bench-chats bench-chaos redis-server postgresql promtool wrk clean bench-archive

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The embedded Redis and the test fixtures need a redis-server binary; Debian's package provides it.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "redis-server not found: installing Debian's redis-server package"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server >/dev/null; \
	  command -v systemctl >/dev/null 2>&1 && $$SUDO systemctl disable --now redis-server >/dev/null 2>&1 || true; \
	}

# The archive's tests run on a real PostgreSQL server started on a free port by a fixture; the
# package's own cluster on 5432 is not used, so it is stopped.
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  echo "PostgreSQL not found: installing Debian's postgresql package"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql >/dev/null; \
	  command -v systemctl >/dev/null 2>&1 && $$SUDO systemctl disable --now postgresql >/dev/null 2>&1 || true; \
	  $$SUDO pg_ctlcluster --force "$$(ls /usr/lib/postgresql | sort -n | tail -1)" main stop >/dev/null 2>&1 || true; \
	}

# promtool (Debian's prometheus package) checks and unit-tests deploy/prometheus/alerts.yaml.
promtool:
	@command -v promtool >/dev/null 2>&1 || { \
	  echo "promtool not found: installing Debian's prometheus package"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq prometheus >/dev/null; \
	  command -v systemctl >/dev/null 2>&1 && $$SUDO systemctl disable --now prometheus prometheus-node-exporter >/dev/null 2>&1 || true; \
	}

demo: $(STAMP) redis-server
	$(BIN)/bridge demo --config config/example.yaml $(ARGS)

serve: $(STAMP) redis-server
	$(BIN)/bridge serve --config config/example.yaml --demo

check: $(STAMP)
	$(BIN)/bridge check --config config/example.yaml

lint: $(STAMP)
	$(BIN)/ruff check bridge connectors rules tests bench
	$(BIN)/ruff format --check bridge connectors rules tests bench

typecheck: $(STAMP)
	$(BIN)/mypy bridge connectors rules bench tests

unit: $(STAMP) redis-server postgresql promtool
	$(BIN)/pytest -q $(ARGS)

test: lint typecheck unit

# mypy --strict and the whole suite with every dependency at the oldest version pyproject.toml allows (uv's
# lowest-direct resolution), in var/venv-lowest: the lower bounds are only true while this passes.
LOWEST := var/venv-lowest
test-lowest: $(STAMP) redis-server postgresql promtool
	$(BIN)/python -m pip install --quiet 'uv>=0.5'
	$(BIN)/uv venv --quiet --allow-existing --python $(BIN)/python $(LOWEST)
	$(BIN)/uv pip install --quiet --python $(LOWEST)/bin/python --resolution lowest-direct -e '.[dev]'
	$(LOWEST)/bin/mypy bridge connectors rules bench tests
	$(LOWEST)/bin/python -m pytest -q -p no:cacheprovider $(ARGS)

# The peers live in their own environments: arq 0.28 pins redis<6, BullMQ is Node.
bench/.venv-arq/.stamp:
	$(PY) -m venv bench/.venv-arq
	bench/.venv-arq/bin/python -m pip install --quiet 'arq==0.28.0'
	touch $@

bench/node_modules/.stamp: bench/package.json
	cd bench && npm install --no-audit --no-fund --loglevel=error
	touch $@

bench-timers: $(STAMP) redis-server bench/.venv-arq/.stamp bench/node_modules/.stamp
	$(BIN)/python bench/timers.py $(ARGS)

wrk:
	@command -v wrk >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq wrk >/dev/null; }

bench-ingest: $(STAMP) redis-server wrk
	$(BIN)/python bench/ingest.py $(ARGS)

bench-chats: $(STAMP) redis-server
	$(BIN)/python bench/chats.py $(ARGS)

# 100,000 finished chats and 10,000 task orders archived into SQLite and PostgreSQL, beside a plain INSERT.
bench-archive: $(STAMP) redis-server postgresql
	$(BIN)/python bench/archive.py $(ARGS)

# Several bridge processes on one AOF Redis under kills, a Redis restart, a Slack outage and a burst.
bench-chaos: $(STAMP) redis-server
	$(BIN)/python bench/chaos.py $(ARGS)

clean:
	rm -rf $(VENV) var .mypy_cache .pytest_cache .ruff_cache
