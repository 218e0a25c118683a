# longretr: `make demo` installs everything and runs the main job; `make test` runs the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
INDEX  ?= indexes/demo
DOCS   ?= 300

.PHONY: install demo test test-fast lint clean

install: $(VENV)/.installed

# torch==2.13.0 first: it is the CPU build on this machine's disk; asked for loosely, pip pulls CUDA.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

demo: install
	$(BIN)/longretr demo-corpus corpus --limit $(DOCS)
	$(BIN)/longretr index corpus --index $(INDEX)
	@for q in "parse command line arguments" "compute a SHA-256 digest of a file" \
	          "read and write ZIP archives" "schedule work on a pool of threads"; do \
	  echo; echo "== $$q"; $(BIN)/longretr search "$$q" --index $(INDEX) -k 3; done

test: install
	$(BIN)/pytest -q

test-fast: install
	$(BIN)/pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check longretr tests scripts

clean:
	rm -rf $(VENV) corpus indexes/demo
