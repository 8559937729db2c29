# The two commands: `make run` (the whole app with demo data) and `make test` (the whole suite).
# Both set themselves up on a fresh machine with only Python >= 3.11 and the package registries.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
DEV_ENV := DEBUG=$${DEBUG:-true}
# `make run WEB_PORT=8080 EMULATOR_PORT=9765` when the default ports are taken.
WEB_PORT ?= 8000
EMULATOR_PORT ?= 8765
RUN_ENV := $(DEV_ENV) WEB_PORT=$(WEB_PORT) EMULATOR_PORT=$(EMULATOR_PORT) \
	OPENROUTER_BASE_URL=$${OPENROUTER_BASE_URL:-http://127.0.0.1:$(EMULATOR_PORT)/api/v1} \
	DOOW_PUBLIC_URL=$${DOOW_PUBLIC_URL:-http://127.0.0.1:$(WEB_PORT)}

.PHONY: install run test bench lint format

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python >= 3.11 is required"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

run: install
	$(RUN_ENV) $(BIN)/python manage.py migrate --noinput
	$(RUN_ENV) $(BIN)/python manage.py seed_demo --connect-emulator
	@echo
	@echo "Doow is starting at http://127.0.0.1:$(WEB_PORT)/  (OpenRouter emulator at http://127.0.0.1:$(EMULATOR_PORT)/api/v1)"
	@echo "Log in with one of the development-only logins above. Ctrl-C stops everything."
	@echo
	$(RUN_ENV) PATH="$(CURDIR)/$(BIN):$$PATH" exec $(BIN)/honcho -f Procfile.dev start

# The suite runs on every core (at most 4: beyond that it waits on its browser and worker processes,
# not on CPU); `make test TEST_WORKERS=0` runs it in one process.
TEST_WORKERS ?= auto
test: install
	$(DEV_ENV) $(BIN)/python -m pytest --numprocesses=$(TEST_WORKERS) --maxprocesses=4 $(PYTEST_ARGS)

bench: install
	$(DEV_ENV) $(BIN)/python -m bench $(BENCH_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .
