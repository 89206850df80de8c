#!/usr/bin/env bash
# Times gpt2-parity beside the hand-written Python workflow (transformers + TransformerLens:
# HF eager, TL unprocessed, TL processed) on a GPT-2-small-shaped random model (12 layers,
# d_model 768, 124M parameters, 548 MB), "Hello World", ready reference, in one run on one
# machine, then prints scaling figures: time against tokens (1, 16, 128, 1024), time and peak
# RSS against model size (small, medium; xl with BENCH_XL=1). Figures, not a test.
#
#   make setup && bash bench/run.sh
#
# Environment:
#   TL_PYTHON=PATH   a Python with scripts/requirements-tl.txt; otherwise one is made once in
#                    ~/.cache/gpt2-parity/venv-tl-<hash>, on top of the project's venv (its
#                    torch and transformers are reused, only TransformerLens is installed)
#   BENCH_RUNS=N     runs per figure, the median is printed (default 3; a warm-up run first)
#   BENCH_XL=1       also generate a gpt2-xl-shaped model (6.4 GB, minutes, once) and check it
#   BENCH_DIR=DIR    where models and references are kept (default ~/.cache/gpt2-parity/bench)
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-.venv/bin/python}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/gpt2-parity
bench_dir=${BENCH_DIR:-$cache/bench}
runs=${BENCH_RUNS:-3}
prompt="Hello World"
binary=target/release/gpt2-parity
export HF_HUB_OFFLINE=1

[ -x "$binary" ] || cargo build --release --locked
mkdir -p "$bench_dir"

source bench/lib.sh
TL_PYTHON=$(tl_python)

# make_model_and_reference NAME LAYERS WIDTH HEADS: a random GPT-2 of that shape and a reference for the
# scaling prompts, each made once.
make_model_and_reference() {
  local dir=$bench_dir/$1
  make_model "$dir" "$2" "$3" "$4"
  if [ ! -f "$dir.reference.safetensors" ]; then
    "$binary" reference --model "$dir" --output "$dir.reference.safetensors" -- "${prompts[@]}"
  fi
}

# Prompts of exactly 1, 16, 128 and 1024 tokens: "Hello" then " World" repeated.
token_counts=(1 16 128 1024)
prompts=()
for count in "${token_counts[@]}"; do
  text=Hello
  for ((i = 1; i < count; i++)); do text+=" World"; done
  prompts+=("$text")
done
prompts+=("$prompt")

make_model_and_reference gpt2-small-shaped 12 768 12
make_model_and_reference gpt2-medium-shaped 24 1024 16
[ "${BENCH_XL:-}" = 1 ] && make_model_and_reference gpt2-xl-shaped 48 1600 25

small=$bench_dir/gpt2-small-shaped
weights_mib=$(( $(stat -c %s "$small/model.safetensors") / 1048576 ))
row() { printf '| %-74s | %8s | %8s | %8s |\n' "$@"; }

echo "## Side by side: GPT-2-small shape ($weights_mib MiB of weights), \"$prompt\", ready reference"
echo "$(nproc) cores, $(uname -m), median of $runs runs; uptime: $(uptime | sed 's/.*load/load/')"
echo
row "command" "wall s" "CPU s" "peak MiB"
echo "|---|---|---|---|"
read -r start_s start_c start_m < <(measure "$binary" --version)
read -r compare_s compare_c compare_m < <(measure "$binary" compare "$prompt" --model "$small" --reference "$small.reference.safetensors")
read -r floor_s floor_c floor_m < <(measure "$binary" compare "$prompt" --model "$small" --reference "$small.reference.safetensors" \
  --no-fold-ln --no-center-writing-weights --no-center-unembed --no-fold-value-biases)
read -r explain_s explain_c explain_m < <(measure "$binary" explain "$prompt" --model "$small")
read -r python_s python_c python_m < <(measure "$TL_PYTHON" bench/python_workflow.py "$small" "$prompt")
row "gpt2-parity --version (libtorch start alone)" "$start_s" "$start_c" "$start_m"
row "gpt2-parity compare --reference (unprocessed + processed)" "$compare_s" "$compare_c" "$compare_m"
row "gpt2-parity compare --reference --no-... (every step off: all but processing)" "$floor_s" "$floor_c" "$floor_m"
row "gpt2-parity explain (every processing step)" "$explain_s" "$explain_c" "$explain_m"
row "python: transformers + TransformerLens (HF eager, TL unprocessed, TL processed)" "$python_s" "$python_c" "$python_m"
echo
awk -v c="$compare_s" -v cc="$compare_c" -v cm="$compare_m" -v e="$explain_s" -v ec="$explain_c" -v p="$python_s" -v pc="$python_c" -v w="$weights_mib" -v f="$floor_s" 'BEGIN {
  printf "compare is %.1fx faster than the Python workflow in wall time, %.1fx in CPU time (target >= 20x: %s)\n", p / c, pc / cc, (p / c >= 20 ? "met" : "NOT met")
  printf "with processing taking no time at all, compare would be at most %.1fx faster (everything else: %.2f s)\n", p / f, f
  printf "compare peaks at %.2fx the weights file (target <= 1.5x: %s)\n", cm / w, (cm / w <= 1.5 ? "met" : "NOT met")
  printf "explain takes %.2fx compare in wall time, %.2fx in CPU time (target <= 2x: %s)\n", e / c, ec / cc, (e / c <= 2 ? "met" : "NOT met")
}'

echo
echo "## Time against tokens: compare --reference, GPT-2-small shape, one prompt"
echo
printf '| %-8s | %8s | %8s | %8s |\n' tokens "wall s" "CPU s" "peak MiB"
echo "|---|---|---|---|"
for index in "${!token_counts[@]}"; do
  read -r seconds cpu mib < <(measure "$binary" compare "${prompts[$index]}" --model "$small" --reference "$small.reference.safetensors")
  printf '| %-8s | %8s | %8s | %8s |\n' "${token_counts[$index]}" "$seconds" "$cpu" "$mib"
done

echo
echo "## Model size: compare --reference, \"$prompt\""
echo
printf '| %-20s | %8s | %8s | %8s | %8s | %13s |\n' model "weights MiB" "wall s" "CPU s" "peak MiB" "peak / weights"
echo "|---|---|---|---|---|---|"
for name in gpt2-small-shaped gpt2-medium-shaped gpt2-xl-shaped; do
  dir=$bench_dir/$name
  [ -f "$dir.reference.safetensors" ] || continue
  mib=$(( $(stat -c %s "$dir/model.safetensors") / 1048576 ))
  model_runs=$runs
  [ "$name" = gpt2-xl-shaped ] && model_runs=1
  read -r seconds cpu peak < <(runs=$model_runs measure "$binary" compare "$prompt" --model "$dir" --reference "$dir.reference.safetensors")
  printf '| %-20s | %8s | %8s | %8s | %8s | %13s |\n' "$name" "$mib" "$seconds" "$cpu" "$peak" "$(awk -v p="$peak" -v w="$mib" 'BEGIN { printf "%.2fx", p / w }')"
done
