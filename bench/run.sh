#!/usr/bin/env bash
# Times gpt2-parity beside the hand-written Python workflow on a GPT-2-small-shaped random model
# (12 layers, d_model 768, 50257 tokens, 124M parameters), in one run on one machine, and prints
# wall time and peak RSS for each. Not a test: figures for notes and regressions.
#
#   bash bench/run.sh                 # after `make build`
#   TL_PYTHON=path/to/python bash bench/run.sh   # also time the TransformerLens workflow
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-.venv/bin/python}
bench_dir=${BENCH_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/gpt2-parity/bench}
model=$bench_dir/gpt2-small-shaped
reference=$bench_dir/reference.safetensors
prompt="Hello World"
binary=target/release/gpt2-parity

if [ ! -f "$model/model.safetensors" ]; then
  echo "making a GPT-2-small-shaped random model in $model" >&2
  "$python" tests/support/numpy_gpt2.py make-model --out "$model" --seed 1 --n-layer 12 --n-embd 768 \
    --n-head 12 --n-positions 1024 --tokenizer fixtures/tiny-gpt2/tokenizer.json
  cp fixtures/tiny-gpt2/tokenizer_config.json "$model/"
fi
if [ ! -f "$reference" ]; then
  HF_HUB_OFFLINE=1 "$binary" reference "$prompt" --model "$model" --output "$reference"
fi

# Runs a command twice (the first warms the page cache) and prints the second run's figures.
measure() {
  local label=$1; shift
  "$@" > /dev/null 2>&1 || true
  /usr/bin/time -f '%e %M' -o "$bench_dir/time.txt" "$@" > /dev/null 2>&1 || true
  read -r seconds kilobytes < "$bench_dir/time.txt"
  printf '%-58s %8.2f s %7d MB\n' "$label" "$seconds" "$((kilobytes / 1024))"
}

export HF_HUB_OFFLINE=1
echo "one prompt ($prompt), $(nproc) cores, $(uname -m); wall time and peak RSS"
measure "gpt2-parity compare --reference (unprocessed + processed)" "$binary" compare --model "$model" --reference "$reference"
measure "gpt2-parity compare --reference --threads 2" "$binary" compare --model "$model" --reference "$reference" --threads 2
measure "gpt2-parity explain (8 weight sets)" "$binary" explain "$prompt" --model "$model"
measure "python: torch + transformers, HF eager forward" "$python" bench/python_workflow.py "$model" "$prompt"
if [ -n "${TL_PYTHON:-}" ]; then
  measure "python: + TransformerLens unprocessed and processed" "$TL_PYTHON" bench/python_workflow.py "$model" "$prompt"
fi
