# The vocabulary of the project: install, test, test-fast, lint, flow-meta-production, flow-production, dag, snakemake-report, bench
# (bench-engine, bench-scale, bench-content, bench-transport, bench-daily),
# slurm-up / slurm-down (a single-node SLURM cluster on this machine, docs/scale-out.md).
# Every target installs the virtualenv (.venv) on first use.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= meta_production
CORES ?= 2
MANIFEST ?= config/manifest.json
RUN_ID ?=
PROFILES ?=
PREVIOUS_RUN ?=
HOLDINGS ?=
ARGS ?=
TEST_WORKERS ?= 3
FAST_WORKERS ?= 2

# $(call q,VALUE): VALUE as one shell word, taken literally (spaces, ';', quotes): single-quoted,
# each ' written as '\''. $(call v,NAME): the user variable NAME so quoted, its text as given
# (a '$' in it is not expanded by make). Every user variable but ARGS (split on purpose) goes
# through them.
q = '$(subst ','\'',$(1))'
v = $(call q,$(value $(1)))

# They reach the scripts as arguments only: make would expand a command-line variable (a
# '$(shell ...)' in it included) to put it in the recipes' environment.
unexport PROFILE CORES MANIFEST RUN_ID PROFILES PREVIOUS_RUN HOLDINGS ARGS TEST_WORKERS FAST_WORKERS
ifeq ($(origin RAY_ADDRESS),command line)
unexport RAY_ADDRESS
endif
ifeq ($(origin RAY_NUM_CPUS),command line)
unexport RAY_NUM_CPUS
endif

RUN_OPTS = --profile $(call v,PROFILE) --manifest $(call v,MANIFEST) --cores $(call v,CORES) \
	$(if $(value RUN_ID),--run-id $(call v,RUN_ID)) $(if $(value PROFILES),--profiles $(call v,PROFILES)) \
	$(if $(value PREVIOUS_RUN),--previous-run $(call v,PREVIOUS_RUN)) $(if $(value HOLDINGS),--holdings $(call v,HOLDINGS)) \
	$(if $(value RAY_ADDRESS),--ray-address $(call v,RAY_ADDRESS)) \
	$(if $(value RAY_NUM_CPUS),--ray-num-cpus $(call v,RAY_NUM_CPUS)) $(ARGS)

.PHONY: install test test-fast lint flow-meta-production flow-production dag snakemake-report bench bench-ray bench-engine bench-scale bench-content bench-transport bench-daily clean-runs slurm-up slurm-down

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# The full suite: what CI runs. Three workers on two cores (TEST_WORKERS): most of the suite waits on
# subprocesses, Ray's agents and the SLURM queue, so more workers than cores fill those waits.
# Each test file stays on one worker, in its order (--dist loadfile); the long, waiting
# files start first (tests/conftest.py collects them first).
test: install
	$(PY) -m pytest -q -n $(call v,TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# The developer's loop: unit tests, dry-run DAG tests and one small in-process run (no Ray
# cluster, no killed drivers); tests marked e2e are left to `make test`. It computes rather
# than waits, so it runs on two workers, one per core of a two-core machine (FAST_WORKERS), one file each: a third worker
# would only add its own start-up and collection to the same two cores.
test-fast: install
	$(PY) -m pytest -q -m "not e2e" -n $(call v,FAST_WORKERS) --dist loadfile --no-loadscope-reorder

lint: install
	$(VENV)/bin/ruff check tradingview_scraper scripts tests bench
	$(VENV)/bin/snakemake -s workflow/Snakefile --lint --config profile=meta_demo run_id=lint

flow-meta-production: install
	$(PY) scripts/run_meta_pipeline.py $(RUN_OPTS)

flow-production: install
	$(PY) scripts/run_production_pipeline.py $(RUN_OPTS)

dag: install
	$(PY) scripts/run_meta_pipeline.py $(RUN_OPTS) --dry-run

# Snakemake's own HTML report of a finished run: data/runs/<RUN_ID>/snakemake_report.html.
snakemake-report: install
	$(if $(value RUN_ID),,$(error snakemake-report needs RUN_ID=<a finished run of PROFILE>))
	$(VENV)/bin/snakemake -s workflow/Snakefile --config $(call q,profile=$(value PROFILE)) $(call q,run_id=$(value RUN_ID)) \
		$(call q,manifest=$(value MANIFEST)) $(if $(value PROFILES),$(call q,profiles=$(value PROFILES))) \
		--report $(call q,data/runs/$(value RUN_ID)/snakemake_report.html)

bench: install
	$(PY) bench/run_all.py

# Ray against sequential mode, K = 4 and 8 CPU-bound sleeves (docs/performance.md).
bench-ray: install
	$(PY) bench/bench_ray.py

# Fits per second per risk profile: skfolio's stock fit against the window engine (docs/performance.md).
bench-engine: install
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) bench/bench_engine.py

# Production size: 24 sleeves, meta and nested meta, through the pipeline against bench/reference.py.
bench-scale: install
	$(PY) bench/bench_scale.py

# No-op reruns with the content checks at 4 and 1,000 sleeves, against Snakemake's own no-op (bench/floor).
bench-content: install
	$(PY) bench/bench_content.py

# Driver CPU of a sleeve's results crossing from Ray workers (Arrow) against the list payload it replaced.
bench-transport: install
	$(PY) bench/bench_transport.py

# The morning run (issue 25): 24 sleeves on price files, unchanged / one day appended / full / reference.
bench-daily: install
	$(PY) bench/bench_daily.py

clean-runs:
	rm -rf data/runs .snakemake

# A real single-node SLURM cluster on 127.0.0.1 (installs slurm-wlm and munge with apt-get if
# missing; needs root): what tests/test_slurm.py and CI run the workflow on.
slurm-up:
	scripts/slurm.sh up

slurm-down:
	scripts/slurm.sh down
