# Each target sets up what it needs: the virtualenv, the package, and Tarantool.
PYTHON ?= python3
FUZZ_EXAMPLES ?= 4000
VENV := .venv
BIN := $(VENV)/bin
# What serving needs, and on top of it the tools of test, lint, fuzz, mutate and bench:
# `make run` installs only the first (a new pyproject.toml starts the virtualenv afresh).
HASH := $(shell cat pyproject.toml clients/python/pyproject.toml | cksum | cut -d" " -f1)
RUNTIME := $(VENV)/.runtime-$(HASH)
STAMP := $(VENV)/.dev-$(HASH)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get

.PHONY: run test lint docs lock fuzz mutate bench profile tarantool wrk redis-server chromium curl-jq client-tools docker-compose docker-engine docker-images luacheck promtool clean

run: $(RUNTIME) tarantool
	$(BIN)/sessions serve

# Two processes share the suite, a test file each at a time (the deployment tests stay in one).
test: $(STAMP) tarantool chromium curl-jq client-tools docker-images lint
	$(BIN)/pytest -n 2 --dist loadfile

lint: $(STAMP) docker-compose luacheck promtool client-tools
	$(BIN)/ruff check sessions tests clients/python $(wildcard bench)
	$(BIN)/ruff format --check -q sessions tests clients/python $(wildcard bench)
	$(BIN)/mypy --strict sessions clients/python/sessions_client
	luacheck -q --no-color tarantool $(wildcard bench/*.lua)
	for f in $$(find clients/php -name '*.php'); do php -l $$f >/dev/null || exit 1; done
	for f in clients/node/*.js clients/node/test/*.js; do node --check $$f || exit 1; done
	$(BIN)/hadolint Dockerfile tarantool/Dockerfile
	promtool check rules ops/prometheus/alerts.yml
	SESSIONS_TARANTOOL_PASSWORD=lint docker-compose -f docker-compose.yml config -q
	SESSIONS_TARANTOOL_PASSWORD=lint docker-compose -f docker-compose.yml -f dc.sample.yml config -q
	SESSIONS_TARANTOOL_PASSWORD=lint SESSIONS_REPLICATION_PASSWORD=lint docker-compose -f docker-compose.yml -f dc.sample.yml -f dc.ha.yml config -q
	SESSIONS_TARANTOOL_PASSWORD=lint SESSIONS_VSHARD_PASSWORD=lint docker-compose -f docker-compose.yml -f dc.sample.yml -f dc.sharded.yml config -q

# Property-based tests with a fresh seed (printed first) and ten times the examples of
# `make test` (FUZZ_EXAMPLES=4000 by default); a failure prints the falsifying request.
fuzz: $(STAMP) tarantool
	@seed=$$(od -An -N4 -tu4 /dev/urandom | tr -d ' '); echo "fuzz seed: $$seed"; \
	FUZZ_PROFILE=explore FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest -p no:cacheprovider --hypothesis-seed=$$seed \
		tests/test_fuzz.py tests/test_openapi.py -k "random_requests or schemathesis"

# Mutation testing (slow, not part of `make test`): mutmut on the Python validators, then
# tests/mutate_lua.py on the Lua liveness, expiry and limit code. Both print their score.
mutate: $(STAMP) tarantool
	rm -rf mutants
	$(BIN)/mutmut run --max-children 2 || true
	$(BIN)/mutmut results | grep -v ': killed' || true
	$(BIN)/python tests/mutate_lua.py

bench: $(STAMP) tarantool wrk redis-server $(VENV)/.installed-bench
	$(BIN)/python bench/run.py
	$(BIN)/python bench/overload.py
	cd bench && ../$(BIN)/python sync.py
	cd bench && ../$(BIN)/python elections.py
	cd bench && ../$(BIN)/python events.py
	$(BIN)/python bench/sharded.py

# Where the CPU goes per request: the router's parts in isolation, then py-spy under `get`.
profile: $(STAMP) tarantool wrk $(VENV)/.installed-bench
	$(BIN)/python bench/costs.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/profile.py get
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/profile.py get --api-key

$(VENV)/.installed-bench: $(STAMP) pyproject.toml
	$(BIN)/pip install -q -e '.[dev,bench]'
	touch $@

# The Redis peer the benchmark measures the service against.
redis-server:
	@command -v redis-server >/dev/null || { $(APT) update -q && $(APT) install -y -q redis-server; }

wrk:
	@command -v wrk >/dev/null || { $(APT) update -q && $(APT) install -y -q wrk; }

docker-compose:
	@command -v docker-compose >/dev/null || { $(APT) update -q && $(APT) install -y -q docker-compose; }

# The deployment tests build and run the real image and compose stack. As root this installs
# Debian's Docker and debootstrap and starts dockerd if no engine answers (clearing the pid
# files a killed one leaves, which would stop it); elsewhere those tests skip with the
# reason (and fail under CI=true).
docker-engine: docker-compose
	@if [ "$$(id -u)" = 0 ]; then \
		command -v dockerd >/dev/null && command -v debootstrap >/dev/null \
			|| { $(APT) update -q && $(APT) install -y -q docker.io debootstrap; }; \
		if ! docker info >/dev/null 2>&1; then \
			pgrep -x dockerd >/dev/null || rm -f /var/run/docker.pid /var/run/docker/containerd/containerd.pid; \
			nohup dockerd >/var/log/sessions-dockerd.log 2>&1 & \
			for i in $$(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done; \
		fi; \
	fi

# The local stand-ins for the deployment's base images (debootstrap; minutes on a new machine,
# nothing once built), made before the suite so that no test's time limit pays for them.
docker-images: docker-engine
	@if docker info >/dev/null 2>&1; then bash tests/docker/images.sh; fi

# For `promtool check rules` on the alert rules (Debian's Prometheus package carries it).
promtool:
	@command -v promtool >/dev/null || { $(APT) update -q && $(APT) install -y -q --no-install-recommends prometheus; }

luacheck:
	@command -v luacheck >/dev/null || { $(APT) update -q && $(APT) install -y -q lua-check; }

# The PHP and Node clients' own test suites (PHPUnit, node --test), run by the suite, and
# Debian's TypeScript, whose tsc checks the Node client's type declarations.
client-tools:
	@command -v node >/dev/null || { $(APT) update -q && $(APT) install -y -q nodejs; }
	@command -v tsc >/dev/null || { $(APT) update -q && $(APT) install -y -q node-typescript; }
	@command -v phpunit >/dev/null && php -m | grep -qx curl \
		|| { $(APT) update -q && $(APT) install -y -q php-cli php-curl phpunit; }

# The README's shell examples, which the suite runs as printed.
curl-jq:
	@command -v curl >/dev/null && command -v jq >/dev/null || { $(APT) update -q && $(APT) install -y -q curl jq; }

# For the test that opens /docs in a real browser.
chromium:
	@command -v chromium >/dev/null || { $(APT) update -q && $(APT) install -y -q chromium; }

tarantool:
	@command -v tarantool >/dev/null || { $(APT) update -q && $(APT) install -y -q tarantool; }

$(RUNTIME):
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "Python 3.11 or newer is needed (set PYTHON=...)"; exit 1; }
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null \
		|| { $(APT) update -q && $(APT) install -y -q python3-venv; }
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e .
	touch $@

$(STAMP): $(RUNTIME)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]' -e clients/python
	touch $@

# The service image's exact dependency versions, from a virtualenv of the runtime ones only.
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install -q --disable-pip-version-check .
	{ sed -n '1,3p' requirements.lock; .venv-lock/bin/pip freeze --exclude-editable | grep -v '^sessions'; } > requirements.lock.new
	mv requirements.lock.new requirements.lock
	rm -rf .venv-lock

# What is generated from the code: the tables of README.md and docs/, and openapi.json
# and Tarantool's copy of the weak-secret rule (test_docs.py, test_openapi.py and
# test_security.py check they are current).
docs: $(STAMP)
	$(BIN)/python -m sessions.reference
	$(BIN)/python -m sessions openapi > openapi.json
	$(BIN)/python -m sessions.weak_secrets > tarantool/sessions/weak_secrets.lua

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache mutants *.egg-info
