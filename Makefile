# The README's two commands are `make demo` and `make test`; both set up first.
.PHONY: setup demo test unit e2e lint bench clean

PY := .venv/bin/python

setup:
	@bash scripts/setup.sh

demo: setup
	@.venv/bin/ebpf-tracer demo

test: setup
	@$(PY) -m ruff check ebpf_tracer tests
	@$(PY) -m pytest -ra tests

unit: setup
	@$(PY) -m pytest -q tests/unit

e2e: setup
	@$(PY) -m pytest -ra tests/e2e

lint: setup
	@$(PY) -m ruff check ebpf_tracer tests

bench: setup
	@$(PY) -m pip install -q -e '.[bench]'
	@command -v perf >/dev/null || apt-get install -y -q linux-perf >/dev/null \
		|| echo "bench: no perf (apt-get install linux-perf): flask skips the in-process share"
	@$(PY) bench/run.py $(BENCH_ARGS)

clean:
	rm -rf .venv .pytest_cache .ruff_cache
