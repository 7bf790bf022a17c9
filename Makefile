# Each target sets up what it needs: the virtualenv, the package, and Tarantool.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get

.PHONY: run test lint bench tarantool wrk chromium docker-compose clean

run: $(STAMP) tarantool
	$(BIN)/sessions serve

test: $(STAMP) tarantool chromium lint
	$(BIN)/pytest

lint: $(STAMP) docker-compose
	$(BIN)/ruff check sessions tests $(wildcard bench)
	$(BIN)/ruff format --check -q sessions tests $(wildcard bench)
	$(BIN)/hadolint Dockerfile
	SESSIONS_TARANTOOL_PASSWORD=lint docker-compose -f docker-compose.yml config -q
	SESSIONS_TARANTOOL_PASSWORD=lint docker-compose -f docker-compose.yml -f dc.sample.yml config -q

bench: $(STAMP) tarantool wrk $(VENV)/.installed-bench
	$(BIN)/python bench/run.py

$(VENV)/.installed-bench: $(STAMP)
	$(BIN)/pip install -q -e '.[dev,bench]'
	touch $@

wrk:
	@command -v wrk >/dev/null || { $(APT) update -q && $(APT) install -y -q wrk; }

# No Docker engine is needed: compose files are only validated here.
docker-compose:
	@command -v docker-compose >/dev/null || { $(APT) update -q && $(APT) install -y -q docker-compose; }

# For the test that opens /docs in a real browser.
chromium:
	@command -v chromium >/dev/null || { $(APT) update -q && $(APT) install -y -q chromium; }

tarantool:
	@command -v tarantool >/dev/null || { $(APT) update -q && $(APT) install -y -q tarantool; }

$(STAMP):
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "Python 3.11 or newer is needed (set PYTHON=...)"; exit 1; }
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null \
		|| { $(APT) update -q && $(APT) install -y -q python3-venv; }
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
