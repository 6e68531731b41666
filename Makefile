# Two entry points for a fresh machine with Python 3.11+:
#   make demo   - virtualenv + starload[local], then the orders demo (local broker → DuckDB)
#   make test   - virtualenv + starload[test] + the example plugins, then the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test bench docs clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "starload needs Python 3.11+")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.demo: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[local]'
	touch $@

$(VENV)/.test: pyproject.toml plugins/*/pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]' -e plugins/starload-sqlite -e plugins/starload-clickstream
	touch $@ $(VENV)/.demo

demo: $(VENV)/.demo
	$(BIN)/python examples/run_orders.py

# Two workers: most of the suite waits on the broker's group joins and killed loaders, not on
# the CPU (one worker keeps a 2-core machine under half busy). Each worker has its own broker
# and Snowflake endpoint. `.venv/bin/python -m pytest tests/FILE` runs tests in one process.
test: $(VENV)/.test
	$(BIN)/python -m pytest -n 2

bench: $(VENV)/.test
	$(BIN)/python benchmarks/throughput.py
	$(BIN)/python benchmarks/nesting.py
	$(BIN)/python benchmarks/history.py
	$(BIN)/python benchmarks/several_topics.py
	$(BIN)/python benchmarks/order_lines.py
	$(BIN)/python benchmarks/changing_facts.py
	$(BIN)/python benchmarks/wire_formats.py
	$(BIN)/python benchmarks/scale_out.py
	$(BIN)/python benchmarks/scale_out.py --latency-ms 400

# The documentation site at http://127.0.0.1:8000, rebuilt as the pages change.
docs: $(VENV)/.test
	$(BIN)/python -m mkdocs serve

clean:
	rm -rf $(VENV) site orders.duckdb orders_history.duckdb starload.duckdb
