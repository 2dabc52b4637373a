#!/usr/bin/env bash
# The benchmark suite on a CUDA GPU (`make bench-gpu`): the CPU suite's comparisons with --device cuda,
# the training step also under bf16 autocast, at a batch that fills the chip, compiled with CUDA graphs and
# at the paper's base shape; attention in bf16 through FlashAttention; then the GPU tests.
# PYTHON: an interpreter whose torch has CUDA (default: the venv's); MODEL and SRC: the trained
# translator and the test2016 sources for the decoding benchmark.
set -u
PYTHON=${PYTHON:-.venv/bin/python}
MODEL=${MODEL:-runs/multi30k_de_en/best}
SRC=${SRC:-../shared/data/multi30k/test2016.de}
status=0
run() { echo "+ $*" >&2; "$PYTHON" "$@" || status=1; }
command -v "$PYTHON" >/dev/null || { echo "gpu.sh: no interpreter $PYTHON (run make setup, or set PYTHON=)" >&2; exit 2; }
"$PYTHON" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "gpu.sh: torch sees no CUDA device")' || exit 2
run benchmarks/seq2seq_train.py --device cuda
run benchmarks/seq2seq_train.py --device cuda --dtype bfloat16
run benchmarks/seq2seq_train.py --device cuda --dtype bfloat16 --batch 512
run benchmarks/seq2seq_train.py --device cuda --dtype bfloat16 --batch 512 --compile reduce-overhead
run benchmarks/seq2seq_train.py --device cuda --dtype bfloat16 --batch 384 --shape base
run benchmarks/seq2seq_train.py --device cuda --dtype bfloat16 --batch 384 --shape base --compile reduce-overhead
run benchmarks/gpt.py --device cuda
run benchmarks/attention_scaling.py --device cuda --dtype bfloat16 --max-n 16384
run benchmarks/decoding.py --device cuda --model "$MODEL" --src "$SRC"
run -m pytest -q -m gpu tests/test_gpu.py
exit $status
