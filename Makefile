# Two commands do everything on a fresh machine (see README):  make figures   |   make test
# make results recomputes the tables the figures read; make all = results + figures + notebooks.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= quick
SEEDS ?= 0
JOBS ?= 1
BACKEND ?= local
FAST ?= 0
FAST_FLAG := $(if $(filter 1,$(FAST)),--fast,)
export HF_HUB_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
# glibc keeps freed blocks up to 32 MB for reuse (paper_repro.execution.ALLOCATOR_ENV: fewer page faults in training)
export MALLOC_MMAP_THRESHOLD_ ?= 33554432
export MALLOC_TRIM_THRESHOLD_ ?= 1073741824

.PHONY: setup data browser test test-fast figures prose results notebooks report main all bench clean lab nbval-refs

setup: $(VENV)/.installed data

# torch: on x86_64 + CPython 3.11 our machines carry torch 2.14.1 / torchvision 0.29.1 on local disk (no download);
# elsewhere pip picks what pyproject allows.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	if [ "$$(uname -m)" = x86_64 ]; then $(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1; fi
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	$(PY) -m ipykernel install --user --name fmfl-backdoor --display-name "Python (fmfl-backdoor)" >/dev/null
	touch $@

# Fashion-MNIST: Debian package when we are root and it is missing; otherwise say how to supply it.
data:
	@if [ -n "$$PAPER_REPRO_DATA" ] || [ -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null; \
	else echo "Fashion-MNIST missing: run 'sudo apt-get install dataset-fashion-mnist' or set PAPER_REPRO_DATA=<folder with the *-ubyte.gz files>"; exit 1; fi

# Debian's chromium for the browser test (as root; otherwise that test is skipped and says why)
browser:
	@if command -v chromium >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null \
	  || echo "could not install chromium: the browser test will be skipped"; \
	else echo "chromium missing: 'sudo apt-get install chromium' to run the browser test"; fi

test: setup browser
	$(PY) -m pytest -q

# unit + smoke tiers (~1 minute); `make test` adds the notebook and claim tiers
test-fast: setup
	$(PY) -m pytest -q -m "unit or smoke"

# every figure from the committed tables in data/tables (figure notebooks through papermill; ~1 minute)
figures: $(VENV)/.installed
	$(PY) -m paper_repro figures --profile $(PROFILE)

# the marked numbers and generated blocks of README and docs/, rewritten from the committed tables (paper_repro/prose.py)
prose: $(VENV)/.installed
	$(PY) -m paper_repro.prose --write

# recompute those tables: defense grid (SEEDS), ablations, activation study, F1 samples (runs are cached);
# JOBS=2 runs two at a time (faster on 2 cores, equal to JOBS=1 up to float rounding); FAST=1 runs in bf16
# (its own run keys; tables under data/tables/fast/; docs/speed.md says how far from fp32)
results: setup
	$(PY) -m paper_repro results --profile $(PROFILE) --seeds $(SEEDS) --jobs $(JOBS) --backend $(BACKEND) $(FAST_FLAG)

# the numbered notebooks 01-05 through papermill (executed copies in build/notebooks/notebooks)
notebooks: setup
	$(PY) -m paper_repro notebooks --profile $(PROFILE)

# the nbval references (tests/nbval): the numbered notebooks in smoke with the outputs the regression test compares;
# regenerate them on purpose, when a change should move a number, and commit them with that change
nbval-refs: setup
	$(PY) -c "from paper_repro.notebooks import make_nbval_references as m; print(*m(), sep='\n')"

# every notebook executed, as static HTML with an index page: build/notebooks/report/html/index.html
report: setup
	$(PY) -m paper_repro report --profile $(PROFILE)

# the no-defense main job alone (clean / classic / FM attack) with F1/F2
main: setup
	$(PY) -m paper_repro main --profile $(PROFILE) --seeds $(SEEDS)

# JupyterLab on notebooks/ (kernel "python3" here; "Python (fmfl-backdoor)" in any other JupyterLab of this user)
lab: setup
	$(VENV)/bin/jupyter lab notebooks/

all: results figures notebooks

clean:
	rm -rf build .pytest_cache data/cache
