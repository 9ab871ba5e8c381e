# The commands a newcomer needs: `make run` and `make test`. Each works on a
# fresh machine by itself (it installs what is missing first).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install system-deps run test lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -q --disable-pip-version-check --upgrade pip wheel setuptools
	$(BIN)/pip install -q -q --disable-pip-version-check -e '.[dev]'
	touch $@

# Debian packages the tests start as real peers (Dovecot, smtp-sink, rbldnsd, ...).
system-deps:
	sh ci/install-system-packages ci/apt-packages.txt

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

run: install
	$(BIN)/repmon run --config config.example.toml

# Lint and types first (ruff, mypy: configured in pyproject.toml), then every test.
test: install system-deps
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -rs $(PYTEST_ARGS)

# Benchmarks need the reference tools too (Sisimai, smtp-source); see bench/README.md.
bench: install system-deps
	sh ci/install-system-packages bench/apt-packages.txt
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache
