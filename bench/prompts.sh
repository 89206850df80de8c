#!/usr/bin/env bash
# How gpt2-parity scales with the number of prompts, in one run on one machine. Not a test:
# figures for notes and regressions.
#
# 1. The fixture model, 20, 200 and 2,000 prompts of 1-21 tokens: wall time, CPU time and peak
#    RSS of `reference --prompts-file` (the bundled script) and of `compare --reference`, and
#    the statistics' share of compare's wall time (from --timings). Peak RSS should not grow
#    with the prompt count.
# 2. A GPT-2-small-shaped model with real GPT-2 magnitudes (12 layers, d_model 768, 124M
#    parameters): compare's peak RSS on 1 prompt and on 100 prompts of 64 tokens, and the
#    statistics' share of a 288-token run.
#
#   bash bench/prompts.sh                   # after `make build`; ~6 GB of references in BENCH_DIR
#   COUNTS="20 200" bash bench/prompts.sh   # fewer prompt counts
#
# The prompt files are generated deterministically (seeded), from words that are one GPT-2 token
# each, so a prompt of N words has N tokens.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-.venv/bin/python}
bench_dir=${BENCH_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/gpt2-parity/bench}/prompts
counts=${COUNTS:-20 200 2000}
binary=target/release/gpt2-parity
fixture=fixtures/tiny-gpt2
small_model=$bench_dir/gpt2-small-magnitudes
export HF_HUB_OFFLINE=1
mkdir -p "$bench_dir"

# prompts COUNT MIN_WORDS MAX_WORDS SEED > FILE: JSON Lines, COUNT prompts of MIN..MAX words.
prompts() {
  "$python" - "$@" <<'EOF'
import json, random, sys
count, min_words, max_words, seed = map(int, sys.argv[1:5])
words = (" the of and to in is was for on that with as by at from his it an were are which"
         " this be or has had not but one their first after new two its who they").split()
rng = random.Random(seed)
for _ in range(count):
    print(json.dumps("".join(" " + rng.choice(words) for _ in range(rng.randint(min_words, max_words)))))
EOF
}

# measure LABEL COMMAND...: prints wall seconds, CPU seconds, peak RSS and, when the command
# printed --timings, the statistics' share of its wall time.
measure() {
  local label=$1; shift
  /usr/bin/time -f '%e %U %S %M' -o "$bench_dir/time.txt" "$@" > /dev/null 2> "$bench_dir/stderr.txt" || true
  read -r seconds user system kilobytes < "$bench_dir/time.txt"
  local share
  share=$(awk '$1 == "statistics" { s = $2 } $1 == "total" { t = $2 } END { if (t > 0) printf "%.0f%%", 100 * s / t; else print "-" }' \
    "$bench_dir/stderr.txt")
  printf '%-52s %8.2f s %8.2f s %7d MiB %8s\n' "$label" "$seconds" "$(echo "$user + $system" | bc)" "$((kilobytes / 1024))" "$share"
  echo "$((kilobytes / 1024))" > "$bench_dir/peak.txt"
}

peak() { cat "$bench_dir/peak.txt"; }

echo "$(nproc) cores, $(uname -m); load: $(uptime | sed 's/.*load average/load average/')"
printf '%-52s %10s %10s %11s %8s\n' "" "wall" "cpu" "peak RSS" "stats"

declare -A reference_peak compare_peak
for count in $counts; do
  prompts "$count" 1 21 "$count" > "$bench_dir/fixture-$count.jsonl"
  reference=$bench_dir/fixture-$count.safetensors
  measure "reference --prompts-file, fixture, $count prompts" \
    "$binary" reference --prompts-file "$bench_dir/fixture-$count.jsonl" --model "$fixture" --output "$reference"
  reference_peak[$count]=$(peak)
  measure "compare --reference, fixture, $count prompts" \
    "$binary" compare --model "$fixture" --reference "$reference" --timings
  compare_peak[$count]=$(peak)
done
first=${counts%% *}
last=${counts##* }
echo "peak RSS, $last prompts against $first: reference $(echo "scale=3; ${reference_peak[$last]} / ${reference_peak[$first]}" | bc)x," \
  "compare $(echo "scale=3; ${compare_peak[$last]} / ${compare_peak[$first]}" | bc)x (target: at most 1.10x)"

if [ ! -f "$small_model/model.safetensors" ]; then
  echo "making a GPT-2-small-shaped model with GPT-2's magnitudes in $small_model" >&2
  "$python" tests/support/numpy_gpt2.py make-model --out "$small_model" --seed 1 --n-layer 12 --n-embd 768 \
    --n-head 12 --n-positions 1024 --tokenizer "$fixture/tokenizer.json" --gpt2-magnitudes
  cp "$fixture/tokenizer_config.json" "$small_model/"
fi
prompts 100 64 64 64 > "$bench_dir/small-100x64.jsonl"
prompts 1 288 288 288 > "$bench_dir/small-288.jsonl"
for name in small-100x64 small-288; do
  [ -f "$bench_dir/$name.safetensors" ] ||
    "$binary" reference --prompts-file "$bench_dir/$name.jsonl" --model "$small_model" --output "$bench_dir/$name.safetensors" 2> /dev/null
done
first_prompt=$("$python" -c 'import json, sys; print(json.loads(open(sys.argv[1]).readline()))' "$bench_dir/small-100x64.jsonl")
measure "compare --reference, GPT-2 small, 1 prompt x 64 tokens" \
  "$binary" compare --model "$small_model" --reference "$bench_dir/small-100x64.safetensors" "$first_prompt" --timings
one=$(peak)
measure "compare --reference, GPT-2 small, 100 prompts x 64 tokens" \
  "$binary" compare --model "$small_model" --reference "$bench_dir/small-100x64.safetensors" --timings
hundred=$(peak)
echo "peak RSS, 100 prompts against 1: $(echo "scale=3; $hundred / $one" | bc)x (target: at most 1.10x)"
measure "compare --reference, GPT-2 small, 1 prompt x 288 tokens" \
  "$binary" compare --model "$small_model" --reference "$bench_dir/small-288.safetensors" --timings
echo "(stats: the statistics' share of compare's wall time, from --timings; target for 288 tokens: at most 15%)"
