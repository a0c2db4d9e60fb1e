# Two commands on a fresh machine with Python 3.11+ and make: `make demo`, `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: demo test docs proto proto-baseline bench clean

# The virtual environment is rebuilt when the dependencies change.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("Python 3.11 or newer is needed") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/toros demo

test: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(MAKE) --no-print-directory docs
	$(PY) -m pytest

# The documentation site (Sphinx, Markdown pages; the contract, configuration and CLI references generated from
# their sources), warnings as errors: docs/_build/html/index.html.
docs: $(VENV)/.installed
	$(VENV)/bin/sphinx-build -W --keep-going -q -b html docs docs/_build/html

# Regenerates toros/generated/ from proto/toros.proto (the generated code is committed).
proto: $(VENV)/.installed
	$(PY) -m grpc_tools.protoc -Itoros/generated=proto --python_out=. --grpc_python_out=. --pyi_out=. proto/toros.proto

# Records the current contract as the baseline that `buf breaking` guards (after a release).
proto-baseline: $(VENV)/.installed
	$(VENV)/bin/buf build -o proto/toros.v1.binpb

bench: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[test,bench]'
	$(PY) -m pip install --quiet 'setuptools<81' wheel && $(PY) -m pip install --quiet --no-build-isolation tinynpydb
	$(PY) -m pip install --quiet properimage
	$(PY) benchmarks/frontdesk.py
	$(PY) benchmarks/calibration.py
	$(PY) benchmarks/alert.py
	$(PY) benchmarks/scheduler.py
	$(PY) benchmarks/science.py
	$(PY) benchmarks/discovery.py --latency

clean:
	rm -rf $(VENV) demo .pytest_cache .hypothesis docs/_build docs/reference/generated
