# Two commands are the whole setup: `make run` and `make test`. Each prepares the virtualenv
# in .venv (pinned packages) on first use, and again only when a requirements file changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
READY := $(VENV)/.ready
PORT ?= 8000

.PHONY: run test test-js screenshots lint typecheck check bench clean

$(READY): requirements.txt requirements-dev.txt constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is required, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt -c constraints.txt
	@touch $(READY)

run: $(READY)
	PORT=$(PORT) $(BIN)/python -m devstack

# The JavaScript unit tests (Node's own runner) first, then pytest. Files are listed by a glob,
# not a directory, so Debian 12's Node 18 runs them as Node 20+ does; no files is a failure.
JS_TESTS := frontend/tests/*.test.mjs

test-js:
	@command -v node >/dev/null || { echo "make test: node is missing (apt-get install nodejs)" >&2; exit 1; }
	@set -- $(JS_TESTS); if [ ! -f "$$1" ]; then echo "make test: no JavaScript tests ($(JS_TESTS))" >&2; exit 1; fi; \
	  timeout 300 node --test "$$@"

# pytest exits 5 when it collects nothing: that is a failure here, not a pass.
test: test-js $(READY)
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "make test: no tests were collected" >&2; exit 1; fi; exit $$rc

# Benchmarks write their results into docs/performance.md (never timed assertions in tests).
bench: $(READY)
	$(BIN)/python -m bench.call_count
	$(BIN)/python -m bench.exchange
	$(BIN)/python -m bench.transports
	$(BIN)/python -m bench.browser

# PNGs of the main views for docs/ and the README, from a real Chromium against a fresh local stack.
screenshots: $(READY)
	$(BIN)/python -m tests.browser.screenshots

lint: $(READY)
	$(BIN)/ruff check .

typecheck: $(READY)
	$(BIN)/mypy

check: lint typecheck test

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
