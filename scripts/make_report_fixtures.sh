#!/usr/bin/env bash
# Real run folders for the report tests: stories260K pruned by three methods at three sparsities
# and 2:4, each with WikiText-2 perplexity and zero-shot results, plus the dense baseline. Only the
# small JSON records are kept (topiary.json, eval-*.json), not the pruned weights.
# Usage: scripts/make_report_fixtures.sh   (from the repository root; about a minute)
set -euo pipefail
cd "$(dirname "$0")/.."
model="${TOPIARY_DATA_DIR:-../shared/data}/models/stories260K/checkpoint_legacy.bin"
out=test/fixtures/tasks/runs
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
topiary() { node --import tsx src/cli/main.ts "$@"; }
evaluate() { # MODEL DIR
  topiary eval --model "$1" --dataset wikitext2 --seqlen 256 --max-windows 16 --json > "$2/eval-wikitext2.json"
  topiary eval --model "$1" --tasks arc_easy,piqa,hellaswag,boolq --limit 40 --out "$2/eval-tasks.json" > /dev/null
}
rm -rf "$out"
mkdir -p "$out/dense"
evaluate "$model" "$out/dense"
for method in magnitude wanda sparsegpt; do
  for target in "--sparsity 0.3" "--sparsity 0.5" "--sparsity 0.7" "--pattern 2:4"; do
    name="$method-$(echo "$target" | sed 's/--sparsity //; s/--pattern //; s/:/of/')"
    topiary prune --model "$model" --method "$method" $target --nsamples 16 --seqlen 256 --out "$work/$name" > /dev/null
    mkdir -p "$out/$name"
    cp "$work/$name/topiary.json" "$out/$name/"
    evaluate "$work/$name" "$out/$name"
  done
done
du -sh "$out"
