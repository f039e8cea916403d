# Two entry points for a fresh clone: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test check lint types unit browser screenshots bench kb-eval clean

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

unit: $(STAMP) browser
	NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost $(BIN)/pytest -q

## The README's screenshots (docs/screenshots/), from the browser test; `make unit` writes
## them to out/screenshots/ instead, so a test run leaves the tree clean.
screenshots: $(STAMP) browser
	SUPPORTBOT_SCREENSHOTS=docs/screenshots NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost $(BIN)/pytest -q tests/test_e2e_web_browser.py

## The load benchmark: the real bot against the local Telegram/Slack servers (about 4 min;
## `make bench QUICK=1`: about 40 s).
bench: $(STAMP)
	NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost $(BIN)/python bench/load_bench.py $(if $(QUICK),--quick) $(if $(ENCODER),--encoder $(ENCODER))

kb-eval: $(STAMP)
	$(BIN)/supportbot kb eval

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
