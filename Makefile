# Two commands are the whole setup: `make run` and `make test`. Each installs the system
# packages it lacks (tools/ensure-system: python3-venv, and for the tests nodejs and chromium,
# through apt-get as root or with passwordless sudo; otherwise it says what to install), and
# prepares the virtualenv in .venv (pinned packages) on first use, again only when a
# requirements file changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
READY := $(VENV)/.ready
PORT ?= 8000

.PHONY: run test test-fast test-js soak screenshots lint typecheck check bench clean deploy destroy operator

$(READY): requirements.txt requirements-dev.txt constraints.txt
	@PYTHON=$(PYTHON) bash tools/ensure-system run
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt -c constraints.txt
	@touch $(READY)

run: $(READY)
	PORT=$(PORT) $(BIN)/python -m devstack

# The JavaScript unit tests (Node's own runner) first, then pytest. Files are listed by a glob,
# not a directory, so Debian 12's Node 18 runs them as Node 20+ does; no files is a failure.
JS_TESTS := frontend/tests/*.test.mjs

test-js:
	@PYTHON=$(PYTHON) bash tools/ensure-system test
	@set -- $(JS_TESTS); if [ ! -f "$$1" ]; then echo "make test: no JavaScript tests ($(JS_TESTS))" >&2; exit 1; fi; \
	  timeout 300 node --test "$$@"

# pytest exits 5 when it collects nothing: that is a failure here, not a pass.
test: test-js $(READY)
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "make test: no tests were collected" >&2; exit 1; fi; exit $$rc

# The fast tier: every pytest test that starts no subprocess stack and no browser (markers e2e
# and browser, tests/tiers.py), on both cores (pytest-xdist), in under 3 minutes on 2 cores;
# `make test` runs everything, one test at a time.
test-fast: $(READY)
	@$(BIN)/python -m pytest -m "not e2e and not browser" -n 2 $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "make test-fast: no tests were collected" >&2; exit 1; fi; exit $$rc

# The chaos soak at full size (the suite runs it with 300 messages): 2,000 messages between two
# clients losing 20 % of frames both ways, with duplicates and connection cuts. Then the local
# stack in its fault mode (devstack/faults.py) with 1,200 messages (the suite runs 150): AWS
# calls failing, Lambdas dying, jobs delivered twice, calls run twice, spurious 410s.
soak: $(READY)
	SOAK_MESSAGES=2000 SOAK_PROGRESS=1 $(BIN)/python -m pytest tests/test_chaos_soak.py -s -p no:cacheprovider
	CHAOS_MESSAGES=1200 $(BIN)/python -m pytest tests/test_chaos_faults.py -k chaos_with -s -p no:cacheprovider

# The whole deploy of a stage to AWS, and its removal (docs/deploy.md): infra stack, chalice app,
# frontend, smoke test. DEMO=1 uploads frontend/demo/ too; SMOKE=0 skips the smoke test;
# PARAMS="WafRateLimit=1000 ..." passes infra stack parameters; REGION overrides the AWS config's.
STAGE ?=
DEMO ?=
SMOKE ?= 1
PARAMS ?=
REGION ?=
DEPLOY_ARGS = --stage $(STAGE) $(if $(REGION),--region $(REGION)) $(foreach p,$(PARAMS),--parameter $(p))

deploy: $(READY)
	@test -n "$(STAGE)" || { echo "make deploy: give the stage, e.g. make deploy STAGE=dev" >&2; exit 2; }
	$(BIN)/python infra/deploy.py deploy $(DEPLOY_ARGS) $(if $(filter 1,$(DEMO)),--demo) $(if $(filter 0,$(SMOKE)),--skip-smoke)

destroy: $(READY)
	@test -n "$(STAGE)" || { echo "make destroy: give the stage, e.g. make destroy STAGE=dev" >&2; exit 2; }
	$(BIN)/python infra/deploy.py destroy $(DEPLOY_ARGS)

# Benchmarks write their results into docs/performance.md (never timed assertions in tests).
bench: $(READY)
	$(BIN)/python -m bench.call_count
	$(BIN)/python -m bench.cost
	$(BIN)/python -m bench.moto_transactions
	$(BIN)/python -m bench.exchange
	$(BIN)/python -m bench.profile_exchange
	$(BIN)/python -m bench.throughput
	$(BIN)/python -m bench.transports
	$(BIN)/python -m bench.held_waits
	$(BIN)/python -m bench.groups
	$(BIN)/python -m bench.group_acks
	$(BIN)/python -m bench.group_latency
	$(BIN)/python -m bench.media_calls
	$(BIN)/python -m bench.typing_calls
	$(BIN)/python -m bench.block_calls
	$(BIN)/python -m bench.operator_calls
	$(BIN)/python -m bench.delete_calls
	$(BIN)/python -m bench.report_calls
	$(BIN)/python -m bench.erasure_calls
	$(BIN)/python -m bench.soak
	$(BIN)/python -m bench.long_conversation
	$(BIN)/python -m bench.browser

# The operator's command line (docs/operator.md) against the local stack (or OPERATOR_API):
# make operator ARGS="--token T reports", ARGS="--token T ban user paul --reason spam", ...
OPERATOR_API ?= http://127.0.0.1:$(PORT)/api
operator: $(READY)
	@$(BIN)/python -m webim_client.operator --api $(OPERATOR_API) $(ARGS)

# PNGs of the main views for docs/ and the README, from a real Chromium against a fresh local stack.
screenshots: $(READY)
	$(BIN)/python -m tests.browser.screenshots

# The JavaScript checks' packages (package.json, pinned by package-lock.json) in node_modules,
# installed on first use and again only when the lock file changes, like the venv above.
NODE_READY := node_modules/.ready
$(NODE_READY): package.json package-lock.json
	@PYTHON=$(PYTHON) bash tools/ensure-system lint
	npm ci --no-audit --no-fund --loglevel=error
	@touch $(NODE_READY)

# ruff; then the JavaScript: ESLint (eslint.config.js) and tsc --checkJs over JSDoc types
# (tsconfig.json: frontend/lib strict; tsconfig.app.json: the pages).
lint: $(READY) $(NODE_READY)
	$(BIN)/ruff check .
	node_modules/.bin/eslint --max-warnings 0 .
	node_modules/.bin/tsc -p tsconfig.json
	node_modules/.bin/tsc -p tsconfig.app.json

typecheck: $(READY)
	$(BIN)/mypy

check: lint typecheck test

clean:
	rm -rf $(VENV) .venv-deploy .pytest_cache .mypy_cache .ruff_cache
