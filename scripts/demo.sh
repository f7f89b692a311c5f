#!/usr/bin/env bash
# The README's main job, end to end on a real model (SmolLM2-135M): inspect it, generate a
# sentence, and measure WikiText-2 perplexity.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
model="$(bash scripts/fetch-smollm2.sh)"
topiary() { node bin/topiary.js "$@"; }
echo "== inspect"; topiary inspect "$model"
echo "== generate"; topiary generate --model "$model" --prompt "The three primary colors are" --max-new-tokens 24
echo "== WikiText-2 perplexity (seqlen 2048, first ${DEMO_WINDOWS:-16} windows)"
topiary eval --model "$model" --dataset wikitext2 --seqlen 2048 --max-windows "${DEMO_WINDOWS:-16}"
