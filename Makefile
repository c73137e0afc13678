# ens_distill: the two commands of the README are `make demo` (main job) and `make test` (tests); `make lab` opens the
# notebooks in JupyterLab.
# Both create or reuse .venv and install the pinned dependencies first (idempotent).
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ens_distill-installed
PRESET ?= demo
METHOD ?= independent
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PYTHONHASHSEED := 0
comma := ,
# jemalloc (Debian libjemalloc2), set to keep freed pages: large packed intermediates are reused instead of page-faulted
# again (any finite dirty_decay_ms returns them at once). Runs hand pages back between phases and every 10 train
# steps (ens_distill.core.release_memory). Used when present; glibc malloc otherwise.
JEMALLOC := $(firstword $(wildcard /usr/lib/x86_64-linux-gnu/libjemalloc.so.2 /usr/lib/aarch64-linux-gnu/libjemalloc.so.2))
RUNENV := $(if $(JEMALLOC),LD_PRELOAD=$(JEMALLOC) MALLOC_CONF=retain:true$(comma)dirty_decay_ms:-1$(comma)muzzy_decay_ms:-1,)

.PHONY: setup demo lab prepare test export bench report report2 scaling study

setup: $(STAMP)

$(STAMP): requirements.txt constraints.txt settings.ini setup.py
	bash scripts/setup.sh $(PY) $(VENV)
	touch $(STAMP)

demo: setup
	mkdir -p reports/runs
	$(RUNENV) $(BIN)/papermill nbs/run_method.ipynb reports/runs/$(METHOD)-$(PRESET).ipynb -k python3 -p method $(METHOD) -p preset $(PRESET)

# JupyterLab on the project's venv and its kernel (`Python 3 (ens_distill)`, i.e. .venv/bin/python), serving the repository
# with nbs/ open; relative paths in the notebooks resolve against the repository root (core.project_path).
# More options: make lab LAB_ARGS='--no-browser --port 8890' (add --allow-root in a container running as root).
LAB_ARGS ?=
lab: setup
	$(RUNENV) $(BIN)/jupyter lab --ServerApp.root_dir=$(CURDIR) --ContentsManager.preferred_dir=nbs $(LAB_ARGS)

prepare: setup
	$(RUNENV) $(BIN)/ens-distill-prepare --preset $(PRESET)

test: setup
	bash scripts/check_export.sh $(BIN)
	$(RUNENV) $(BIN)/nbdev_test --n_workers 2 --timing
	$(RUNENV) $(BIN)/pytest -q tests

export: setup
	$(BIN)/nbdev_export

# the published site: the study's runs (reports/study) and sweeps (reports/study-sweeps)
report: setup
	$(RUNENV) $(BIN)/ens-distill-publish --runs_dir reports/study --sweeps_dir reports/study-sweeps --site_dir reports/site

# the second regime's site: reports/study2-250k (runs, comparisons, scaling sweeps, latency) -> reports/site-study2
report2: setup
	$(BIN)/python scripts/study2.py summary --tokens 250000
	$(RUNENV) $(BIN)/ens-distill-publish --runs_dir reports/study2-250k --sweeps_dir reports/study2-250k/sweeps \
	  --latency reports/study2-250k/latency.json --site_dir reports/site-study2 --executed_nb reports/report-study2.ipynb \
	  --record ../site/index.html

# the whole study (issue #8): every method x 3 seeds, grids, sweep, task suite, then the report (about 3 h on 2 cores)
study: setup
	bash scripts/study.sh

scaling: setup
	mkdir -p reports/runs
	$(RUNENV) $(BIN)/papermill nbs/run_scaling.ipynb reports/runs/scaling-$(PRESET).ipynb -k python3 -p preset $(PRESET) -p method $(METHOD)

bench: setup
	$(RUNENV) $(BIN)/python benchmarks/teacher_cache.py
	$(RUNENV) $(BIN)/python benchmarks/packed_vs_loop.py
	$(RUNENV) $(BIN)/python benchmarks/latency.py
