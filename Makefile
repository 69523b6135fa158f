# Rapport: the two commands a newcomer needs are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Debian packages the tests drive for real: Dovecot (IMAP), Chromium (UI) with a Chinese font
# for its screenshots, wrk (benchmarks).
TEST_DEBS := dovecot-imapd chromium fonts-wqy-microhei wrk
# The suite mostly waits (databases, Dovecot, daemons, a browser), so it runs in more
# processes than there are cores; the browser tests share one worker (tests/browser/conftest.py).
TEST_WORKERS ?= 3

.PHONY: run test install install-test debs lint typecheck check-config bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(VENV)/.installed $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

## run: install, migrate var/rapport.db, create the first admin, run the daemon.
run: install
	$(BIN)/rapport run

## debs: as root, install the Debian packages the tests use (skipped when present).
debs:
	@missing=""; for p in $(TEST_DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then echo "not root: cannot install$$missing (tests that need them will skip)"; exit 0; fi; \
	echo "installing$$missing"; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null

lint: install-test
	$(BIN)/ruff check .

typecheck: install-test
	$(BIN)/mypy

## test: install what the tests need, then lint, type-check and run the whole suite.
test: install-test debs lint typecheck
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup

check-config: install
	$(BIN)/rapport check-config

bench: install-test
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python "$$b" || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
