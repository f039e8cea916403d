# Two entry points for a fresh clone: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test check lint types unit browser postgresql nginx faketime test-dates screenshots bench kb-eval clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

## Set everything up and run the bot with ./config.yaml.
run: $(STAMP)
	$(BIN)/supportbot run

## Set everything up, then format check, lint, types and the whole test suite.
test: $(STAMP) lint types unit

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

types: $(STAMP)
	$(BIN)/mypy

## The browser tests drive Debian's Chromium (browsers cannot be downloaded by Playwright here).
browser:
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

## The storage contract tests start a throwaway cluster of Debian's PostgreSQL (tests/pg_cluster.py).
postgresql:
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq postgresql)

## The deployment test (tests/test_deploy_nginx.py) runs Debian's nginx in front of the bot.
nginx:
	test -x /usr/sbin/nginx || command -v nginx >/dev/null || (apt-get update -qq && apt-get install -y -qq nginx)

unit: $(STAMP) browser postgresql nginx
	NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost $(BIN)/pytest -q

## The whole suite with the clock moved far from today (libfaketime, by an offset so that
## the subprocesses of the tests share one clock; monotonic clocks left alone): two Europe/Paris
## daylight-saving days and a New Year's Eve. One date: `make test-dates DATES=2027-12-31T23:30:00Z`.
DATES ?= 2027-03-28T01:30:00Z 2027-03-28T12:00:00Z 2027-10-31T01:30:00Z 2027-10-31T12:00:00Z 2027-12-31T23:30:00Z

faketime:
	command -v faketime >/dev/null || (apt-get update -qq && apt-get install -y -qq faketime)

test-dates: $(STAMP) browser postgresql nginx faketime
	@lib=$$(dpkg -L libfaketime | grep '/libfaketime\.so\.1$$' | head -n 1); \
	test -n "$$lib" || { echo "libfaketime.so.1 not found (dpkg -L libfaketime)"; exit 1; }; \
	for at in $(DATES); do \
	  offset=$$(( $$(date -d "$$at" +%s) - $$(date +%s) )); \
	  case $$offset in -*) ;; *) offset="+$$offset" ;; esac; \
	  echo "== the suite at $$at (FAKETIME=$$offset)"; \
	  env LD_PRELOAD="$$lib" FAKETIME="$$offset" DONT_FAKE_MONOTONIC=1 \
	    FAKETIME_DONT_FAKE_MONOTONIC=1 FAKETIME_FORCE_MONOTONIC_FIX=0 \
	    NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost \
	    $(BIN)/pytest -q -x || exit 1; \
	done

## The README's screenshots (docs/screenshots/), from the browser test; `make unit` writes
## them to out/screenshots/ instead, so a test run leaves the tree clean.
screenshots: $(STAMP) browser
	SUPPORTBOT_SCREENSHOTS=docs/screenshots NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost $(BIN)/pytest -q tests/test_e2e_web_browser.py

## The load benchmark: the real bot against the local Telegram/Slack servers and widget
## visitors over WebSocket, each against a bare bot as its ceiling (about 5 min;
## `make bench QUICK=1`: about a minute; `make bench STORAGE=all PROCESSES=2`: the storage
## rows alone, one process on SQLite, one and two on a throwaway PostgreSQL, about 2½ min).
bench: $(STAMP) $(if $(STORAGE),postgresql)
	NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost $(BIN)/python bench/load_bench.py $(if $(QUICK),--quick) $(if $(ENCODER),--encoder $(ENCODER)) $(if $(STORAGE),--storage $(STORAGE)) $(if $(PROCESSES),--processes $(PROCESSES))

kb-eval: $(STAMP)
	$(BIN)/supportbot kb eval

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
