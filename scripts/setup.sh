#!/usr/bin/env bash
# Everything a fresh machine needs before Topiary runs: OpenBLAS (Debian's libopenblas-dev) and
# Chromium (the report test), the npm dependencies, the native addon, the TypeScript build, the
# Python reference stack, and the SmolLM2-135M model file.
# Each step is skipped when already done, so running it again is cheap.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\033[1msetup:\033[0m %s\n' "$*" >&2; }

# Debian packages: OpenBLAS for the native backend; Chromium for the report's rendering test.
missing=()
dpkg -s libopenblas-dev >/dev/null 2>&1 || missing+=(libopenblas-dev)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  step "installing Debian packages: ${missing[*]}"
  if [ "$(id -u)" = 0 ]; then sudo=(); elif command -v sudo >/dev/null; then sudo=(sudo); else
    echo "setup: ${missing[*]} missing and this user cannot install them; ask an administrator to run: apt-get install ${missing[*]}" >&2
    exit 1
  fi
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# `npm ci`: exactly the versions in package-lock.json. node-llama-cpp lists a prebuilt binary for
# every platform as an optional dependency; the lock holds an entry for each (with its os/cpu), so
# npm installs only this platform's and never needs the others from the registry.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  step "installing npm dependencies (npm ci, from package-lock.json)"
  npm ci --no-audit --no-fund --loglevel=error
fi

addon=native/build/Release/topiary_native.node
if [ ! -f "$addon" ] || [ -n "$(find native -maxdepth 1 -newer "$addon" -type f)" ]; then
  step "building the native backend (node-gyp, offline against local Node headers)"
  bash scripts/build-native.sh
fi

step "compiling TypeScript"
npx tsc -p tsconfig.json

# The Python side (transformers, PyTorch) is the reference the tests compare against.
if ! python3 -c "import torch, transformers, safetensors, gguf, accelerate" >/dev/null 2>&1; then
  step "installing the Python reference stack (requirements-dev.txt: torch CPU, transformers)"
  python3 -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt >&2
fi

# compressed-tensors' sparse compressors, the reference for prune --save-format sparse: a release
# that pins transformers<5, hence its own file installed without dependencies.
if ! python3 -c "import compressed_tensors.compressors.sparse_compressors" >/dev/null 2>&1; then
  step "installing the compressed-tensors sparse reference (requirements-compressed-tensors.txt, --no-deps)"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-compressed-tensors.txt >&2
fi

bash scripts/fetch-smollm2.sh >/dev/null
