#!/usr/bin/env bash
# Regenerates the README's sample outputs from the binary (blocks after `<!-- sample -->`);
# tests/readme.rs checks they stay current.
set -euo pipefail
cd "$(dirname "$0")/.."
UPDATE_README=1 cargo test --release --locked --test readme
