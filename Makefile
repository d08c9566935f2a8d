# torchstn: `make demo` sets up and runs the main job, `make test` runs the checks CI runs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MINUTES ?= 4

.PHONY: setup test lint typecheck demo slow clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

lint: setup
	$(VENV)/bin/ruff check torchstn tests examples benchmarks
	$(VENV)/bin/ruff format --check torchstn tests examples benchmarks

typecheck: setup
	$(VENV)/bin/mypy torchstn

test: lint typecheck
	$(PY) -m pytest -m "not slow" -q

slow: setup
	$(PY) -m pytest -m slow -q

demo: setup
	$(VENV)/bin/torchstn demo --out runs/demo --minutes $(MINUTES)

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
