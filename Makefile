# The two commands: `make run` (the whole app with demo data) and `make test` (the whole suite).
# Both set themselves up on a fresh machine with only Python >= 3.11 and the package registries.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
DEV_ENV := DEBUG=$${DEBUG:-true}

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
	$(DEV_ENV) $(BIN)/python manage.py migrate --noinput
	$(DEV_ENV) $(BIN)/python manage.py seed_demo --connect-emulator
	@echo
	@echo "Doow is starting at http://127.0.0.1:8000/  (OpenRouter emulator at http://127.0.0.1:8765/api/v1)"
	@echo "Log in with one of the development-only logins above. Ctrl-C stops everything."
	@echo
	$(DEV_ENV) PATH="$(CURDIR)/$(BIN):$$PATH" exec $(BIN)/honcho -f Procfile.dev start

test: install
	$(DEV_ENV) $(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install
	$(DEV_ENV) $(BIN)/python -m bench $(BENCH_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .
