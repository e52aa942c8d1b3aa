# Everything a newcomer needs: `make run` and `make test`. Only Python 3.11+
# and make are assumed; the rest is installed into .venv from uv.lock.

PYTHON ?= python3
PORT ?= 8000
# The links in messages point at this port too (PUBLIC_URL's default).
export PORT
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin

# Use the interpreter that made the tools venv; never download another one.
export UV_PYTHON_DOWNLOADS := never

.PHONY: install run test lint format check clean soak bench bench-smoke bench-scale bench-tracing bench-events wrk

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

$(VENV)/.installed: pyproject.toml uv.lock | $(UV)
	UV_PYTHON=$(TOOLS)/bin/python $(UV) sync --frozen --quiet
	touch $@

install: $(VENV)/.installed ## Create .venv with the locked dependencies and dev tools

run: install ## Migrate, then serve with Gunicorn on 127.0.0.1:$(PORT)
	$(BIN)/python -m app migrate
	@echo
	@echo "  Serving on http://127.0.0.1:$(PORT)  -  docs at http://127.0.0.1:$(PORT)/docs"
	@echo
	$(BIN)/gunicorn -c gunicorn.conf.py --bind 127.0.0.1:$(PORT) app.main:app

# One pytest worker per CPU; PYTEST_ARGS="-n0 -k name" runs a single test in-process.
test: install ## The whole suite: SQLite, and PostgreSQL too when TEST_DATABASE_URL is set
	$(BIN)/pytest -n auto --dist worksteal $(PYTEST_ARGS)

# Locust drives a mixed load (bench/soak_locustfile.py) against the production
# command on PostgreSQL, then checks (no 5xx, no lost update, worker memory
# steady). SOAK_SECONDS (default 600), SOAK_CONCURRENCY, SOAK_WORKERS,
# SOAK_DATABASE_URL: see bench/soak.py.
soak: install ## Soak test; figures in bench/results/soak-latest.json
	$(BIN)/python -m bench.soak

# Debian's wrk drives the load; installed here when missing (as root, like CI).
wrk:
	@command -v wrk >/dev/null 2>&1 || { \
	  echo "installing wrk"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >/dev/null 2>&1 \
	  || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >/dev/null; }; }

# The service against a floor app doing the same SQL, on PostgreSQL, with wrk.
# BENCH_DURATION (10 s), BENCH_CONNECTIONS (16,64), BENCH_WORKERS (2),
# BENCH_ALTERNATIONS (3), BENCH_DATABASE_URL: see bench/perf.py.
# BENCH_SMOKE=1 is CI's quick check that every scenario answers 2xx/3xx.
bench: install wrk ## Benchmark; figures in bench/results/: bench-latest.{json,png}, stack-latest.json, tracing-latest.json, events-latest.json
	$(BIN)/python -m bench.perf
	$(BIN)/python -m bench.stack
	$(BIN)/python -m bench.tracing
	$(BIN)/python -m bench.events

# Live events: change-to-client latency with 500 SSE clients, memory per stream.
bench-events: install ## Live events' figures; bench/results/events-latest.json
	$(BIN)/python -m bench.events

# One read with tracing off, sampled out and on (exported to a local receiver).
bench-tracing: install wrk ## What tracing costs; figures in bench/results/tracing-latest.json
	$(BIN)/python -m bench.tracing

bench-smoke: install wrk ## The benchmark's smoke mode (1 s runs; fails on any error)
	BENCH_SMOKE=1 $(BIN)/python -m bench.perf

# The product list's queries at 10,000 and 1,000,000 rows, one client.
# BENCH_SCALE_ROWS, BENCH_SCALE_REQUESTS, BENCH_SCALE_DATABASE_URL: see bench/scale.py.
bench-scale: install ## Scale benchmark; figures in bench/results/scale-latest.json
	$(BIN)/python -m bench.scale

lint: install ## What CI checks besides the tests
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy app bench

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache
