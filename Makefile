# Two entry points for a fresh machine (see README): `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
# Set FFLAB_DATA_DIR to a folder holding the MNIST IDX files to skip the download.

.PHONY: venv demo test bench clean

$(VENV)/.installed: pyproject.toml requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip >/dev/null 2>&1 || true
	$(PIP) install -q -r requirements-dev.txt
	$(PIP) install -q --no-deps --no-build-isolation -e .
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/fflab train demo

test: venv
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest

bench: venv
	$(VENV)/bin/fflab bench

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
