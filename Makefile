# Quick start: `make run` serves the API on 127.0.0.1:8000 (SQLite); `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test install migrate lint bench clean lock

# Exactly the versions (and hashes) of requirements-dev.lock; `make lock` regenerates the locks
# from pyproject.toml.
$(VENV)/.installed: pyproject.toml requirements-dev.lock
	$(PYTHON) -m venv $(VENV)
# pip before 24 resolves an extra (pytest-cov's coverage[toml]) apart from its pinned package and
# then refuses it in --require-hashes mode; the lock's own pip is installed by the next line.
	$(PY) -m pip install --quiet "pip>=24.1"
	$(PY) -m pip install --quiet --require-hashes -r requirements-dev.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

install: $(VENV)/.installed

migrate: install
	$(PY) -m alembic upgrade head

run: migrate
	@echo ""
	@echo "Serving on http://$(HOST):$(PORT)  (API docs: http://$(HOST):$(PORT)/docs)"
	@echo "Get a development token, then call the API with it:"
	@echo "  TOKEN=\$$($(PY) -m api token --role admin)"
	@echo "  curl -H \"Authorization: Bearer \$$TOKEN\" http://$(HOST):$(PORT)/v1/drugs/aldesleukin"
	@echo "Other roles: --role clinician --team onc-a | --role patient --patient-id <uuid>"
	@echo ""
	$(PY) -m api serve --host $(HOST) --port $(PORT)

# The whole suite; TEST_DATABASE_URL chooses the database (default: a fresh SQLite file per run).
# Measures the coverage of api/ and fails under [tool.coverage.report] fail_under (pyproject.toml);
# a bare `pytest` measures nothing and stays fast.
test: install
	$(PY) -m pytest -q --cov --cov-report=term

# ruff, then mypy on api/ ([tool.mypy] in pyproject.toml); .pre-commit-config.yaml runs the same.
lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

bench: install
	$(PY) bench/run.py

LOCK := $(PY) -m piptools compile --quiet --generate-hashes --strip-extras --no-emit-index-url \
	--no-emit-find-links --allow-unsafe
lock: install
	$(LOCK) -o requirements.lock pyproject.toml
	$(LOCK) --extra dev -o requirements-dev.lock pyproject.toml

clean:
	rm -rf $(VENV) *.db *.db-wal *.db-shm .coverage .coverage.* .mypy_cache
