#!/usr/bin/env bash
# The rounding envelope on a GPT-2-small-shaped model with GPT-2's magnitudes (12 layers,
# d_model 768, logits near -60, three residual dims of several hundred): faithful independent
# ports and ports with one catalogued deviation (tests/support/gpt2_ports.py), each checked with
# `compare --candidate`, side by side: verdict, first place outside the envelope, worst multiple
# of float32 rounding, tested cause, and the logits' max |diff| (what tolerance alone sees).
# Also our own two models against Hugging Face. Not a test: figures for notes and the README
# (about ten minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-.venv/bin/python}
bench_dir=${BENCH_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/gpt2-parity/bench}
model=$bench_dir/gpt2-small-real-magnitudes
reference=$bench_dir/envelope-reference.safetensors
binary=target/release/gpt2-parity
export HF_HUB_OFFLINE=1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ ! -f "$model/model.safetensors" ]; then
  echo "making a GPT-2-small-shaped model with GPT-2 magnitudes in $model" >&2
  "$python" tests/support/numpy_gpt2.py make-model --out "$model" --seed 1 --n-layer 12 --n-embd 768 \
    --n-head 12 --n-positions 1024 --tokenizer fixtures/tiny-gpt2/tokenizer.json --gpt2-magnitudes
fi
if [ ! -f "$reference" ]; then
  "$binary" reference --model "$model" --output "$reference" -- "Hello World" \
    "Hello World. The quick brown fox jumps over the lazy dog, and GPT-2 predicts the next token of ordinary English text." >&2
fi

summary() {
  "$python" -c '
import json, sys
label, report = sys.argv[1], json.load(sys.stdin)
for prompt in report["prompts"]:
    for row in prompt["comparisons"]:
        rounding = row.get("rounding") or {}
        for which in ("candidate", "reference"):
            side = rounding.get(which)
            # Each candidate row once: its own side.
            if not side or (which == "reference" and row["name"] == "candidate-vs-reference"):
                continue
            values = [v for key in ("snapshots", "each_block") for v in (side.get(key) or []) if v is not None]
            values += [v for v in (side.get("logits"), side.get("head")) if v is not None]
            first = side["first_outside"]
            place = "-" if first is None else ("embeddings" if first["index"] == 0 else ("logits" if first["index"] > 12 else "h.%d" % (first["index"] - 1)))
            cause = (side.get("cause") or {}).get("description", "-")
            print("%-34s %3d tok  %-26s %-4s %-10s %10.1fx  max|diff| %.1e  %s" % (label, len(prompt["tokens"]), row["name"], "pass" if row["passed"] else "FAIL",
                  place, max(values), row["max_abs_diff"], cause))
' "$1"
}

echo "ours vs Hugging Face:"
{ "$binary" compare --model "$model" --reference "$reference" --format json 2>/dev/null || true; } | summary "ours (unprocessed, processed)"
echo
echo "candidates (tests/support/gpt2_ports.py):"
while read -r label args; do
  # shellcheck disable=SC2086
  "$python" tests/support/gpt2_ports.py --model "$model" --reference "$reference" --output "$work/candidate.safetensors" $args >/dev/null
  start=$(date +%s.%N)
  # Exit 1 (a failing candidate) is a figure here, not an error.
  { "$binary" compare --model "$model" --reference "$reference" --candidate "$work/candidate.safetensors" --format json 2>/dev/null || true; } | summary "$label"
  printf '%-34s compare took %.1f s\n' "" "$(echo "$(date +%s.%N) - $start" | bc)"
done <<'EOF'
numpy-float32 --backend numpy --dtype float32
numpy-float64 --backend numpy --dtype float64
torch-float32 --backend torch --dtype float32
exact-gelu --backend torch --deviation exact_gelu
exact-gelu-h.5 --backend torch --deviation exact_gelu --block 5
exact-gelu-h.11 --backend torch --deviation exact_gelu --block 11
ln-eps-1e-12 --backend torch --deviation ln_eps_1e-12
no-mask-h.11 --backend torch --deviation no_mask --block 11
attn-scale-d_model --backend torch --deviation attn_scale_d_model
positions+1 --backend torch --deviation positions_plus_1
no-ln-f --backend torch --deviation no_ln_f
unembedding-untied --backend torch --deviation untied_unembedding
EOF
