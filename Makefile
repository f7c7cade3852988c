# Two entry points (see README): `make run` and `make test`. Both set everything up first.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
SNAKEMAKE := $(VENV)/bin/snakemake
CORES ?= all
# Extra arguments for snakemake, e.g. SNAKEMAKE_ARGS="--configfile config/quick.yaml"
SNAKEMAKE_ARGS ?=
REPORT ?= results/report.html
PYTEST_ARGS ?=

# Debian packages: the Fashion-MNIST files (a local mirror), and for the tests a browser and SLURM.
APT_RUN := dataset-fashion-mnist
APT_TEST := $(APT_RUN) chromium slurm-wlm slurmctld slurmd slurm-client munge

# The Apptainer image (containers/README.md): where config.yaml's `container:` points, and the
# CUDA of its PyTorch base (13.0 needs an NVIDIA driver >= 580; 12.8 runs on >= 525.60.13).
IMAGE ?= containers/fashion-cnn_0.1.0.sif
CUDA ?= 13.0
APPTAINER ?= apptainer

.PHONY: setup setup-test run quick check-config report test test-fast fuzz lint rulegraph benchmark image choices docs

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[cpu,workflow,dev]'
	touch $@

# Installs Debian packages where apt exists and we may (root, or passwordless sudo); elsewhere
# says what is missing and carries on (the official mirrors serve users with internet).
define apt_install
	@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q "install ok installed" || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null; then echo "note: no apt-get here; not installing: $$missing"; exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; \
	else echo "note: not root and no passwordless sudo; not installing: $$missing"; exit 0; fi; \
	echo "installing Debian packages: $$missing"; \
	$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing >/dev/null
endef

setup: $(VENV)/.installed
	$(call apt_install,$(APT_RUN))

setup-test: $(VENV)/.installed
	$(call apt_install,$(APT_TEST))

# `make run SNAKEMAKE_ARGS=-n` shows the plan and runs nothing (and makes no report).
DRY_RUN := $(filter -n --dry-run --dryrun,$(SNAKEMAKE_ARGS))
run: setup check-config
	$(SNAKEMAKE) --cores $(CORES) $(SNAKEMAKE_ARGS)
	$(if $(DRY_RUN),,$(MAKE) --no-print-directory report)

# The CPU demo: every experiment, shortened (config/quick.yaml), in a few minutes.
quick:
	$(MAKE) --no-print-directory run SNAKEMAKE_ARGS="--configfile config.yaml config/quick.yaml" REPORT=results/quick/report.html

# Snakemake reads the files given with --configfile before any workflow code runs, and on a YAML
# syntax error says only "Config file is not valid JSON or YAML": this names the file and line.
check-config: $(VENV)/.installed
	@files=config.yaml; take=0; for word in $(SNAKEMAKE_ARGS); do \
	  case "$$word" in --configfile|--configfiles) take=1;; -*) take=0;; *) [ $$take = 0 ] || files="$$files $$word";; esac; \
	done; $(PY) -m fashion_cnn check-config --configfile $$files

report:
	mkdir -p $(dir $(REPORT))
	$(SNAKEMAKE) --report $(REPORT) $(SNAKEMAKE_ARGS)
	@echo "report: $(REPORT)"

test: setup-test
	$(PY) -m pytest $(PYTEST_ARGS)

# The quick subset (README, "Tests"): no real Snakemake DAG, no SLURM cluster, none of the tests
# that train or run Snakemake in a subprocess, so neither Chromium nor SLURM is installed for it.
test-fast: setup
	$(PY) -m pytest -m "not workflow and not slurm and not slow" $(PYTEST_ARGS)

# The config fuzzer with many more examples than `make test` runs (tests/test_fuzz_config.py).
# FUZZ_EXAMPLES mutated configs validated, FUZZ_JOB_EXAMPLES engine and run choices checked
# against a training job's own decisions, FUZZ_DRY_RUNS mutated config files through Snakemake.
FUZZ_EXAMPLES ?= 20000
FUZZ_JOB_EXAMPLES ?= 3000
FUZZ_DRY_RUNS ?= 200
fuzz: setup
	FUZZ_PROFILE=fuzz FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) FUZZ_JOB_EXAMPLES=$(FUZZ_JOB_EXAMPLES) \
	FUZZ_DRY_RUNS=$(FUZZ_DRY_RUNS) $(PY) -m pytest tests/test_fuzz_config.py $(PYTEST_ARGS)

# Training and inference speed, the chapter's loop vs the engine (docs/benchmarks.md).
BENCHMARK_ARGS ?= --switches fp32 channels_last channels_last+bf16
benchmark: setup
	$(SNAKEMAKE) --cores $(CORES) results/data/fashion_mnist.npz
	$(PY) -m fashion_cnn benchmark $(BENCHMARK_ARGS)

# Built beside its final name and moved there only when whole: a failed build leaves no image.
image:
	@command -v $(APPTAINER) >/dev/null || { echo "make image: no '$(APPTAINER)' on PATH. Install Apptainer 1.2 or newer (apptainer.org/docs/admin/main/installation.html; many clusters have it as a module: module load apptainer), or build with Docker: docker build -f containers/Dockerfile -t fashion-cnn:0.1.0 . (containers/README.md)." >&2; exit 2; }
	mkdir -p $(dir $(IMAGE))
	rm -f $(IMAGE).partial
	$(APPTAINER) build --build-arg CUDA=$(CUDA) $(IMAGE).partial containers/fashion-cnn.def
	mv -f $(IMAGE).partial $(IMAGE)
	@echo "image: $(IMAGE) (CUDA $(CUDA)); config.yaml's container: points here by default"

# The torch-free catalog of registered models, presets, optimizers and schedules that the config
# validates with: run after adding or changing one (make lint fails while it is stale).
choices: $(VENV)/.installed
	$(PY) -m fashion_cnn choices

lint: $(VENV)/.installed
	$(PY) -m fashion_cnn choices --check
	$(PY) -m fashion_cnn docs --check
	$(VENV)/bin/ruff check workflow tests tools
	$(VENV)/bin/ruff format --check workflow tests tools
	$(VENV)/bin/mypy
	$(VENV)/bin/snakefmt --check Snakefile workflow/Snakefile workflow/rules
	$(PY) tools/snakemake_lint.py  # snakemake --lint, but the data's rules need no container

# The results pages (docs/results/) and the README's headline table, from the ledger (docs/ledger/).
docs: $(VENV)/.installed
	$(PY) -m fashion_cnn docs

rulegraph: $(VENV)/.installed
	$(SNAKEMAKE) --rulegraph | dot -Tsvg > docs/rulegraph.svg
