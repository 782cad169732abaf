# Developer entry points. Run `python3 -m venv .venv && .venv/bin/pip install -e '.[test]'` first.
PY ?= .venv/bin/python

.PHONY: test test-fast lint bench

# The README's test command: the whole suite but the llama.cpp tier (pyproject's addopts).
test:
	$(PY) -m pytest

# Everything except the end-to-end serve tier (and the llama.cpp tier).
test-fast:
	$(PY) -m pytest -m 'not llamacpp and not e2e'

lint:
	$(PY) -m ruff check . && $(PY) -m ruff format --check . && $(PY) -m mypy llamaswap

# The benchmarks of bench/README.md, one at a time (they measure CPU-bound things and disturb
# each other). bench/common.py, floor_proxy.py and whatif.py are their helpers, not benchmarks.
BENCHES = bench/proxy.py bench/swap.py bench/compile.py bench/decide.py

bench:
	@for script in $(BENCHES); do echo "== $$script"; $(PY) $$script || exit $$?; done
