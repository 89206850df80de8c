#!/usr/bin/env bash
# Creates (once) the Python environment that serves both the reference script and the
# Rust build's libtorch. It lives in a per-user cache keyed by the requirements' hash, so
# fresh clones on the same machine reuse it; .venv in the repository links to it.
# GPT2_PARITY_VENV overrides where it lives. A second run does no network work.
set -euo pipefail
cd "$(dirname "$0")/.."

requirements=scripts/requirements.txt
hash=$(sha256sum "$requirements" | cut -c1-16)
venv=${GPT2_PARITY_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/gpt2-parity/venv-$hash}
python=${PYTHON:-python3}

if [ ! -f "$venv/.complete" ]; then
  echo "setting up the Python environment in $venv (torch is ~5 GB; a few minutes)" >&2
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
  touch "$venv/.complete"
fi

if [ "$(readlink .venv 2>/dev/null)" != "$venv" ]; then
  rm -rf .venv
  ln -s "$venv" .venv
fi
