# `make demo` and `make test` work on a fresh machine: they create .venv and install what is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench bench-gpu setup clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch is pinned to the local CPU build; installing it first keeps pip from resolving a CUDA one.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	# qkv's CPU kernels (qkv.nn.native), compiled now for this processor rather than on first use (~40 s).
	$(BIN)/python -c "import sys; from qkv.nn import native; sys.exit(native.main())"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/qkv demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The speed suite: each benchmark runs qkv and the reference implementation in one process and prints
# one JSON line per figure (docs/PERFORMANCE.md has the latest table). Those whose targets the spread
# between processes decides (fp32 training against Marian, the small GPT's generation against uncached,
# greedy decoding) run in three processes, each followed by a line of the medians across them
# (benchmarks/processes.py).
bench: $(STAMP)
	$(BIN)/python benchmarks/processes.py --runs 3 benchmarks/seq2seq_train.py
	$(BIN)/python benchmarks/seq2seq_train.py --dtype bfloat16
	$(BIN)/python benchmarks/gpt.py --only training
	$(BIN)/python benchmarks/processes.py --runs 3 benchmarks/gpt.py --only small
	$(BIN)/python benchmarks/gpt.py --only gpt2
	$(BIN)/python benchmarks/attention_scaling.py
	$(BIN)/python benchmarks/processes.py --runs 3 benchmarks/decoding.py --model runs/multi30k_de_en/best --beams 1
	$(BIN)/python benchmarks/decoding.py --model runs/multi30k_de_en/best --beams 4

bench-gpu:  # on a machine with a CUDA GPU; PYTHON= an interpreter whose torch has CUDA (see benchmarks/gpu.sh)
	bash benchmarks/gpu.sh

clean:
	rm -rf $(VENV) runs build src/*.egg-info
