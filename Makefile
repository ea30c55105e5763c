# leukoflow: `make demo` (set-up + the whole workflow on the synthetic default) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: demo test lint bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[tf]'
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[tf,test,jax,slurm,dvc]'
	bash tests/setup-system.sh
	touch $@

## demo: install, then run the whole workflow on config/demo.yaml (synthetic data, six models);
## gpu=2: two model jobs at a time (on a CPU the gpu resource only counts model jobs)
demo: $(VENV)/.installed
	snakemake --cores all --resources gpu=2 --configfile config/demo.yaml
	@cat results/table1.md
	@echo "Report: results/report.html"

## lint: ruff, snakefmt and snakemake --lint
lint: $(VENV)/.installed-test
	ruff check src tests
	ruff format --check src tests
	snakefmt --check Snakefile workflow/rules
	snakemake --lint --configfile config/demo.yaml

## test: install the test extras and system packages, lint, then the whole pytest suite
test: $(VENV)/.installed-test lint
	$(PY) -m pytest

## bench: the speed figures of every step (results/bench/*.json, one table)
bench: $(VENV)/.installed-test
	leukoflow bench all

clean:
	rm -rf results logs benchmarks .snakemake
