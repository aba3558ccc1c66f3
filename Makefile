# The two commands of README.md live here: `make campaign` (set up, run the main job) and
# `make test` (set up, run the tests). Both create .venv and install the package on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# System packages (redis-cli for the store's real-process tests, redis-server for its benchmark):
# installed with apt-get when missing. The stamp is written only once redis-cli is there, so a
# machine where the install could not happen tries again next time (the tests skip, saying why).
SYSDEPS := $(VENV)/.system-deps

.PHONY: setup test test-slow test-pythons lint campaign bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(SYSDEPS): scripts/install-system-deps.sh
	bash scripts/install-system-deps.sh
	@if command -v redis-cli >/dev/null 2>&1; then mkdir -p $(VENV) && touch $(SYSDEPS); fi

setup: $(STAMP) $(SYSDEPS)

# The README's test command (and CI's): lint and types, the whole suite but `slow` on the
# default Python, then the simulator's tests on Python 3.12 and 3.13.
test: lint $(SYSDEPS)
	$(BIN)/python -m pytest -q
	bash scripts/test-pythons.sh

# The long campaigns.
test-slow: $(STAMP) $(SYSDEPS)
	$(BIN)/python -m pytest -q -m slow

# The simulator's tests on every supported Python (3.11, 3.12, 3.13), each in its own venv.
test-pythons:
	bash scripts/test-pythons.sh

lint: $(STAMP)
	$(BIN)/ruff check src tests examples benchmarks
	$(BIN)/ruff format --check src tests examples benchmarks
	$(BIN)/mypy

# The main job: a simulation campaign under faults, with a progress bar and a summary.
# The number of seeds is detsim's own default (`detsim sim --help`) unless SEEDS=N is given.
campaign: $(STAMP)
	$(BIN)/detsim sim $${SEEDS:+--seeds $$SEEDS}

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_loop.py
	$(BIN)/python benchmarks/bench_check.py

clean:
	rm -rf $(VENV) .venv-3.12 .venv-3.13 build *.egg-info src/*.egg-info
