# Two entry points on a fresh clone (see README):
#   make demo   -> create .venv, install cellbridge, run the demo workflow
#   make test   -> create .venv, install cellbridge + test tools, run the tests
# The venv is rebuilt only when pyproject.toml changes.
PYTHON ?= python3
VENV ?= .venv
CORES ?= 2
STAMP := $(VENV)/.installed

.PHONY: setup demo test report clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first and pinned: it is a local CPU wheel; any other spec pulls a CUDA build.
	$(VENV)/bin/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e ".[workflow,test]"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/snakemake --cores $(CORES)

report: setup
	$(VENV)/bin/snakemake --cores $(CORES) --report results/report.html

test: setup
	$(VENV)/bin/python -m pytest

clean:
	rm -rf results .snakemake
