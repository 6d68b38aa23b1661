# make demo  : set up .venv (first run) and run every stage on the built-in sample data
# make test  : set up .venv (first run) and run the test suite
# make bench : set up .venv (first run) and run the benchmarks (tables + JSON in bench-output/)
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup demo test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[host,device,dev]'
	@touch $(STAMP)

demo: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/demo.sh

test: $(STAMP)
	@bash scripts/ensure_chromium.sh
	$(PY) -m pytest -q -p no:cacheprovider --durations=15

bench: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/bench.sh

clean:
	rm -rf demo-output bench-output .pytest_cache
