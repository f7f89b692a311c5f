#!/usr/bin/env bash
# The README's main job, end to end on a real model (SmolLM2-135M, Q4_1 GGUF dequantized to fp32):
# dense WikiText-2 perplexity, then RIA 2:4 with channel permutation and Wanda 2:4 for contrast,
# each calibrated on C4, with the perplexity and time of each. Settings can be changed through the
# environment: DEMO_NSAMPLES, DEMO_SEQLEN (calibration), DEMO_WINDOWS (evaluation windows of 2048).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
model="$(bash scripts/fetch-smollm2.sh)"
nsamples="${DEMO_NSAMPLES:-32}"
seqlen="${DEMO_SEQLEN:-512}"
windows="${DEMO_WINDOWS:-16}"
out="${DEMO_OUT:-$HOME/.cache/topiary/demo}"
topiary() { node bin/topiary.js "$@"; }
json_field() { node -e 'const o = JSON.parse(require("fs").readFileSync(0, "utf8")); console.log(o[process.argv[1]])' "$1"; }

echo "== the model"
topiary inspect "$model"
echo
echo "== a greedy continuation"
topiary generate --model "$model" --prompt "The three primary colors are" --max-new-tokens 24
echo
echo "== WikiText-2 perplexity, seqlen 2048, first $windows windows"
dense="$(topiary eval --model "$model" --dataset wikitext2 --seqlen 2048 --max-windows "$windows" --json)"
printf '%-34s perplexity %8.3f\n' "dense" "$(echo "$dense" | json_field perplexity)"
for run in "ria --pattern 2:4 --permute" "wanda --pattern 2:4"; do
  name="${run%% *}-2of4$([[ $run == *permute* ]] && echo -permuted || true)"
  echo
  echo "== prune: $run (C4, $nsamples windows of $seqlen tokens, seed 0) -> $out/$name"
  pruned="$(topiary prune --model "$model" --method $run --calib c4 --nsamples "$nsamples" --seqlen "$seqlen" --seed 0 --out "$out/$name" --json)"
  ppl="$(topiary eval --model "$out/$name" --dataset wikitext2 --seqlen 2048 --max-windows "$windows" --json | json_field perplexity)"
  printf '%-34s perplexity %8.3f   pruning took %6.1f s, peak memory %s MiB\n' \
    "$run" "$ppl" "$(echo "$pruned" | json_field seconds)" "$(echo "$pruned" | json_field peak_rss_mb)"
done
