# Shared by bench/run.sh and bench/scale.sh (sourced from the repository root, after $python,
# $cache, $bench_dir and $runs are set).

# tl_python: prints a Python with scripts/requirements-tl.txt for the TransformerLens workflow:
# $TL_PYTHON, else one layered on the project's venv by a .pth file, made once in
# $cache/venv-tl-<hash> (torch and transformers are reused, only TransformerLens is installed).
tl_python() {
  if [ -n "${TL_PYTHON:-}" ]; then
    echo "$TL_PYTHON"
    return
  fi
  local hash tl_venv base_site tl_site
  hash=$(cat scripts/requirements.txt scripts/requirements-tl.txt | sha256sum | cut -c1-16)
  tl_venv=$cache/venv-tl-$hash
  if [ ! -f "$tl_venv/.complete" ]; then
    echo "installing TransformerLens into $tl_venv (once; torch is reused from .venv)" >&2
    rm -rf "$tl_venv"
    "$python" -m venv --without-pip "$tl_venv" 2>/dev/null || "$python" -m venv "$tl_venv"
    base_site=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    tl_site=$("$tl_venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    readlink -f "$base_site" > "$tl_site/gpt2-parity-base.pth"
    "$tl_venv/bin/python" -m pip --version > /dev/null 2>&1 || "$tl_venv/bin/python" -m ensurepip --quiet >&2
    "$tl_venv/bin/python" -m pip install --quiet --disable-pip-version-check -r scripts/requirements-tl.txt >&2
    touch "$tl_venv/.complete"
  fi
  echo "$tl_venv/bin/python"
}

# measure CMD...: the median run of $runs, after one warm-up (page cache), by wall time:
# prints "WALL_SECONDS CPU_SECONDS PEAK_MIB". CPU seconds (user + system) are the figure that
# holds on a machine others are using, where wall time also counts waits for a core.
measure() {
  "$@" > /dev/null 2>&1 || true
  local samples=()
  for ((run = 0; run < runs; run++)); do
    /usr/bin/time -f '%e %U %S %M' -o "$bench_dir/time.txt" "$@" > /dev/null 2>&1 || true
    samples+=("$(cat "$bench_dir/time.txt")")
  done
  printf '%s\n' "${samples[@]}" | sort -n | awk '{ w[NR] = $1; c[NR] = $2 + $3; m[NR] = $4 }
    END { i = int((NR + 1) / 2); printf "%.2f %.2f %d\n", w[i], c[i], m[i] / 1024 }'
}

# make_model DIR LAYERS WIDTH HEADS: a random GPT-2 of that shape (tests/support/numpy_gpt2.py,
# GPT-2's tokenizer), made once.
make_model() {
  if [ ! -f "$1/model.safetensors" ]; then
    echo "making a random model in $1" >&2
    "$python" tests/support/numpy_gpt2.py make-model --out "$1" --seed 1 --n-layer "$2" --n-embd "$3" \
      --n-head "$4" --n-positions 1024 --tokenizer fixtures/tiny-gpt2/tokenizer.json >&2
    cp fixtures/tiny-gpt2/tokenizer_config.json "$1/"
  fi
}
