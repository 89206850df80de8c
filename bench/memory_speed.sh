#!/usr/bin/env bash
# Issue 19's two phases bounded by memory and I/O rather than arithmetic, each against its bound
# in one run on one machine (bench/scale.sh runs it on its own model; it also runs alone):
# - processing (--timings of `compare "Hello World"`, wall and CPU s, each run) against the
#   0.15 s target and, with BASELINE=path/to/another/gpt2-parity, that binary's beside it; the
#   floor beside them: reading the weights file from the page cache, and writing as many bytes
#   of new memory (the processed weights are new memory: the kernel zeroes each page first);
# - `compare --candidate` with the suite's reference as both files (--criterion tolerance: no
#   forward runs) against reading both files from the page cache (cat) and a plain mmap scan.
# Figures, not a test.
#
#   bash bench/memory_speed.sh MODEL_DIR HELLO_REFERENCE SUITE_REFERENCE
#
# HELLO_REFERENCE holds "Hello World"; SUITE_REFERENCE is any reference for MODEL_DIR (scale.sh's
# 100 prompts: about 1.1 GB of logits). RUNS=N runs per figure (default 3), after a warm-up.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-.venv/bin/python}
binary=target/release/gpt2-parity
model=$1 hello_reference=$2 suite_reference=$3
runs=${RUNS:-3}
export HF_HUB_OFFLINE=1

# wall and CPU (user + system) seconds of a command, its output discarded
clock() {
  /usr/bin/time -f '%e %U %S' -o /tmp/memory_speed.$$ "$@" > /dev/null 2>&1 || true
  awk '{ printf "%.2f/%.2f", $1, $2 + $3 }' /tmp/memory_speed.$$
}
# the processing phase's "wall/cpu" from --timings of one compare by binary $1
processing() {
  "$1" compare "Hello World" --model "$model" --reference "$hello_reference" --timings --format json 2>&1 > /dev/null |
    awk '$1 == "processing" { printf "%.3f/%.3f", $2, $3 }'
}
repeat() {
  local figures=()
  "$@" > /dev/null
  for ((run = 0; run < runs; run++)); do figures+=("$("$@")"); done
  echo "${figures[*]}"
}

weights=$model/model.safetensors
weights_mib=$(($(stat -c %s "$weights") / 1048576))
suite_mib=$(($(stat -c %s "$suite_reference") / 1048576))
echo "## Bound by memory and I/O: $(nproc) cores, $(uname -m); load: $(cut -d" " -f1-3 /proc/loadavg)"
echo "figures are wall/CPU seconds, one per run (CPU = user + system, the figure that holds on a busy machine)"
echo
echo "processing ($weights_mib MiB of weights), target <= 0.15 s:"
echo "  this binary:          $(repeat processing "$binary")"
if [ -n "${BASELINE:-}" ]; then
  echo "  BASELINE:             $(repeat processing "$BASELINE")"
fi
echo "  floor, read weights:  $(repeat clock cat "$weights")  (cat from the page cache)"
echo "  floor, new memory:    $(repeat clock "$python" -c "import numpy, sys; numpy.ones(int(sys.argv[1]) // 4, numpy.float32)" \
  "$(stat -c %s "$weights")")  (numpy.ones of as many bytes, with Python's start)"
echo "  Python's start alone: $(repeat clock "$python" -c "import numpy")"
echo
echo "compare --candidate, the suite's reference as both files (2 x $suite_mib MiB), --criterion tolerance:"
echo "  compare --candidate:  $(repeat clock "$binary" compare --model "$model" --reference "$suite_reference" \
  --candidate "$suite_reference" --criterion tolerance)"
echo "  cat both files:       $(repeat clock cat "$suite_reference" "$suite_reference")"
echo "  mmap scan both:       $(repeat clock "$python" -c "
import mmap, sys, numpy
for path in sys.argv[1:]:
    with open(path, 'rb') as handle:
        view = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        numpy.bitwise_or.reduce(numpy.frombuffer(view, numpy.uint64, len(view) // 8))
" "$suite_reference" "$suite_reference")  (numpy, with Python's start)"
"$binary" compare --model "$model" --reference "$suite_reference" --candidate "$suite_reference" --criterion tolerance \
  --timings --format json 2>&1 > /dev/null | grep -E "^ +(reference|statistics|render|other|total)" | sed 's/^/  --timings /'
rm -f /tmp/memory_speed.$$
