#!/usr/bin/env bash
# Precision at real GPT-2 magnitudes: a GPT-2-small-shaped model made with
# `numpy_gpt2.py make-model --gpt2-magnitudes` (logits near -60, std 17, three residual dims of
# several hundred), its Hugging Face reference over prompts of 2 to ~280 tokens, then
# `compare --noise-floor`, printing per prompt the unprocessed and processed errors and their
# ratio. BASELINE=path/to/another/gpt2-parity prints that binary's figures beside (no noise
# floor). Not a test: figures for notes (a few minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-.venv/bin/python}
bench_dir=${BENCH_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/gpt2-parity/bench}
model=$bench_dir/gpt2-small-real-magnitudes
reference=$bench_dir/real-magnitudes-reference.safetensors
prompts=$bench_dir/real-magnitudes-prompts.jsonl
binary=target/release/gpt2-parity
export HF_HUB_OFFLINE=1

if [ ! -f "$model/model.safetensors" ]; then
  echo "making a GPT-2-small-shaped model with GPT-2 magnitudes in $model" >&2
  "$python" tests/support/numpy_gpt2.py make-model --out "$model" --seed 1 --n-layer 12 --n-embd 768 \
    --n-head 12 --n-positions 1024 --tokenizer fixtures/tiny-gpt2/tokenizer.json --gpt2-magnitudes
fi
if [ ! -f "$reference" ]; then
  "$python" - "$prompts" <<'PY'
import json, sys
sentence = "The quick brown fox jumps over the lazy dog, and GPT-2 predicts the next token of ordinary English text. "
prompts = ["Hello World", "Hello World. " + sentence, "  two spaces\tand a tab, digits 12345 and é😀",
           sentence * 3, sentence * 6, sentence * 12]
with open(sys.argv[1], "w", encoding="utf-8") as handle:
    handle.writelines(json.dumps(p, ensure_ascii=False) + "\n" for p in prompts)
PY
  "$binary" reference --model "$model" --prompts-file "$prompts" --output "$reference"
fi

summarize=$(cat <<'PY'
import json, sys
report = json.load(sys.stdin)
print(f"  dtype {report.get('dtype')}, device {report['device']}, passed {report['passed']}")
for prompt in report["prompts"]:
    rows = {c["name"]: c for c in prompt["comparisons"]}
    unprocessed = rows["unprocessed-vs-reference"]["max_abs_diff"]
    processed = rows["processed-vs-reference"]["centered_max_abs_diff"]
    between = rows["processed-vs-unprocessed"]["centered_max_abs_diff"]
    ratio = processed / unprocessed if unprocessed else float("inf")
    floors = " ".join(f"{c['noise_floor']['candidate_vs_float64']:.2e}/{c['noise_floor']['reference_vs_float64']:.2e}"
                      for c in prompt["comparisons"] if c.get("noise_floor"))
    print(f"  {len(prompt['tokens']):4d} tokens: unprocessed {unprocessed:.3e}, processed (centered) {processed:.3e}, "
          f"ratio {ratio:.2f}, processed-vs-unprocessed {between:.3e}" + (f"; from float64 cand/ref {floors}" if floors else ""))
PY
)
echo "$(nproc) cores, $(uname -m), load: $(cut -d" " -f1-3 /proc/loadavg)"
echo "$binary compare --noise-floor"
"$binary" compare --model "$model" --reference "$reference" --format json --noise-floor | "$python" -c "$summarize"
if [ -n "${BASELINE:-}" ]; then
  echo "$BASELINE compare"
  "$BASELINE" compare --model "$model" --reference "$reference" --format json | "$python" -c "$summarize"
fi
