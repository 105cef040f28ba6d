# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Both create .venv/ at the repository root and install everything they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat setup.cfg | md5sum | cut -c1-8)
# Real data for tests and demos; never committed. Override to point elsewhere.
REXBERT_DATA_DIR ?= $(abspath $(wildcard ../shared/data))
export REXBERT_DATA_DIR
# No Hub access at run time (users with the Hub can unset these). Precision is chosen by the CPU's capability.
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: venv demo test test-slow lint bench clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first: the CPU wheel; an unpinned torch would pull a multi-GB CUDA build.
	$(PY) -m pip install -q $(if $(wildcard /opt/wheels),--find-links /opt/wheels) "torch==$${TORCH_VERSION:-2.13.0}"
	$(PY) -m pip install -q -e ".[dev]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m rexbert_cli.main demo

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q -p no:cacheprovider

test-slow: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -m slow

lint: $(STAMP)
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

bench: $(STAMP)
	$(PY) -m benchmarks.run_all

clean:
	rm -rf $(VENV) build *.egg-info outputs
