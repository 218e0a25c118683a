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

# An index built by an earlier default model is rebuilt with today's (`longretr index` without --model keeps an
# index's own model, and never mixes two models' vectors).
STALE := from longretr import store; from longretr.config import load_config as c; \
  m = store.read_manifest("$(INDEX)"); print("--rebuild" if m and m["model_fingerprint"] != c("default").fingerprint() else "")

demo: install
	$(BIN)/longretr demo-corpus corpus --limit $(DOCS)
	$(BIN)/longretr index corpus --index $(INDEX) --model default $$($(BIN)/python -c '$(STALE)')
	@echo; $(BIN)/longretr search --index $(INDEX) -k 3 "parse command line arguments" \
	  "compute a SHA-256 digest of a file" "read and write ZIP archives" "schedule work on a pool of threads"
	@echo; echo "Your own queries: $(BIN)/longretr search --index $(INDEX) \"...\"  (a server: $(BIN)/longretr serve --index $(INDEX))"

test: install
	$(BIN)/pytest -q

test-fast: install
	$(BIN)/pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check longretr tests scripts

# Load test of `longretr serve` on loopback with the real model; BENCH_SERVE_ARGS="--threads 1 ..." to tune.
.PHONY: bench-serve
bench-serve: install
	$(BIN)/python scripts/bench_serve.py $(BENCH_SERVE_ARGS)

# Peak memory of the engine's own work (the forward pass stubbed on the tests' tiny model): indexing 20,000 small
# files (then `rm` of one) and one 60 MB text file, reading a 200 MB JSONL (README, Index folder, "Large corpora").
# About 5 minutes.
.PHONY: bench-memory
bench-memory: install
	$(BIN)/python scripts/bench_memory.py $(BENCH_MEMORY_ARGS)

# Long-context engine vs plain transformers vs sentence-transformers on the real default model, 512 to 32k
# tokens + mixed corpora, into results/bench-speed/<time>/ (README, Speed). 14 min on the lightly loaded
# 2-core CPU, 35 min under load; BENCH_SPEED_ARGS="--quick" (512/2k/8k, small mixed corpus): 15 min under load.
.PHONY: bench-speed
bench-speed: install
	$(BIN)/python scripts/bench_speed.py $(BENCH_SPEED_ARGS)

# LongEmbed-style evaluation (README, Evaluation): quick profile, default + causal models, BM25, chunked
# MiniLM, into results/longembed/<run>/. EVAL_ARGS="--full" runs everything; "--data DIR" the published data.
.PHONY: bench-longembed longembed-filler
bench-longembed: install longembed-filler
	$(BIN)/longretr eval $(EVAL_ARGS)

# The needle haystack: the Jargon File (public domain), Debian package jargon-text; no training uses it.
JARGON := /usr/share/doc/jargon-text/jargon.txt.gz
longembed-filler:
	@test -f $(JARGON) || { command -v apt-get >/dev/null || \
	  { echo "no apt-get: install jargon-text yourself or give EVAL_ARGS='--filler FILE'"; exit 1; }; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -q jargon-text; }
	@test -f $(JARGON) && echo "needle filler: $(JARGON)"

# Training tokens/s of the default backbone per LoRA placement and document length (needs data/train).
.PHONY: bench-train
bench-train: install
	$(BIN)/python scripts/bench_train.py

# The same steps with torch's transparent-huge-page allocation off and on, side by side in fresh processes
# (README, Training throughput: it did not help, so it stays off). One case, 3 steps each; needs data/train.
.PHONY: bench-train-thp
bench-train-thp: install
	$(BIN)/python scripts/bench_train.py --thp both --only "all layers, docs 512" --steps 3 --out results/bench_train_thp

# Retrieval quality per CPU-minute of training, per choice (rank, layers, length, distillation, lr, diffusion stage,
# mined negatives); docs/training-studies.md. 9 cases (the diffusion one only once runs/cpu-1-diffusion/adapter exists)
# x 10 min of training, each then scored, + the untrained backbone scored: 1.5 h of training alone (the scoring time has
# not been measured since the manual-page set was added). BENCH_TRAIN_QUALITY_ARGS to tune (--case NAME, --minutes N).
.PHONY: bench-train-quality
bench-train-quality: install
	$(BIN)/python scripts/bench_train_quality.py $(BENCH_TRAIN_QUALITY_ARGS)

# Dense vs lexical vs hybrid on the demo corpus (README, Search modes). indexes/demo-cmp is built once from corpus/
# (written if missing; default model on 2 CPU cores: ~20 min with AMX-BF16, ~35 min with AVX512-BF16 alone, 1 h 45
# min to 3.5 h in fp32) and reused.
# COMPARE_ARGS="--queries tests/data/demo_queries_heldout.jsonl" scores the 87 held-out queries instead of the 44
# (demo_queries_fresh.jsonl: the 65 fresh ones).
.PHONY: compare-modes
compare-modes: install
	$(BIN)/python scripts/compare_modes.py --index indexes/demo-cmp --corpus corpus $(COMPARE_ARGS)

# The same on 300 long pages of the PostgreSQL 15 manual with 70 known-item queries (README, Search modes). Needs
# Debian's postgresql-doc-15 (apt-get update && apt-get install postgresql-doc-15; the page list is from 15.20);
# indexes/pgdocs is built once (~20 min with AMX-BF16).
.PHONY: compare-pgdocs
compare-pgdocs: install
	$(BIN)/python scripts/build_pgdocs_corpus.py
	$(BIN)/python scripts/compare_modes.py --index indexes/pgdocs --corpus data/pgdocs \
		--queries tests/data/pgdocs_queries.jsonl --out results/compare_pgdocs $(COMPARE_ARGS)

# Every scored known-item set on both corpora (the fifteen; the fresh7 sets stay unscored) with one model (README,
# Search modes: the default's table), into results/compare/<set>/; about 65 min with AMX-BF16 when neither index
# exists. COMPARE_MODEL=NAME for another model (indexes/demo-cmp-NAME, indexes/pgdocs-NAME, results/compare-NAME); for
# a .toml path, COMPARE_NAME names those.
COMPARE_MODEL ?= default
COMPARE_NAME ?= $(COMPARE_MODEL)
SUFFIX := $(if $(filter default,$(COMPARE_NAME)),,-$(COMPARE_NAME))
DEMO_SETS := demo_queries demo_queries_heldout demo_queries_fresh demo_queries_fresh2 demo_queries_fresh3 demo_queries_fresh4 demo_queries_fresh5 demo_queries_fresh6
PGDOCS_SETS := pgdocs_queries pgdocs_queries_fresh pgdocs_queries_fresh2 pgdocs_queries_fresh3 pgdocs_queries_fresh4 pgdocs_queries_fresh5 pgdocs_queries_fresh6
.PHONY: compare-all
compare-all: install
	$(BIN)/python scripts/build_pgdocs_corpus.py
	set -e; for q in $(DEMO_SETS); do $(BIN)/python scripts/compare_modes.py --index indexes/demo-cmp$(SUFFIX) \
	  --corpus corpus --model $(COMPARE_MODEL) --queries tests/data/$$q.jsonl --out results/compare$(SUFFIX)/$$q; done
	set -e; for q in $(PGDOCS_SETS); do $(BIN)/python scripts/compare_modes.py --index indexes/pgdocs$(SUFFIX) \
	  --corpus data/pgdocs --model $(COMPARE_MODEL) --queries tests/data/$$q.jsonl --out results/compare$(SUFFIX)/$$q; done

clean:
	rm -rf $(VENV) corpus indexes/demo
