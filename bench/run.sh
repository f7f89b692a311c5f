#!/usr/bin/env bash
# `npm run bench`: every benchmark, each printing a table and writing JSON under bench/results/.
# They state the machine, thread count, load average and the OpenBLAS kernel that ran. Speed is
# measured here, never asserted in tests. Extra arguments go to bench/prune.ts.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== GEMM and factorisations through the backend (bench/gemm.ts)"
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE node --import tsx bench/gemm.ts
echo
echo "== Sparse kernels vs dense BLAS on SmolLM2's linear shapes (bench/sparse.ts)"
node --import tsx bench/sparse.ts
echo
echo "== Prefill: Topiary vs PyTorch, and eval's peak memory (bench/prefill.ts)"
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE node --import tsx bench/prefill.ts
echo
echo "== Structured pruning of SmolLM2: perplexity, prune time, and prefill/decode in Topiary and llama.cpp (bench/structured.ts)"
node --import tsx bench/structured.ts
echo
echo "== This checkout vs the code before issue 9's model families: prefill tokens/s and prune wall time (bench/versions.ts)"
node --import tsx bench/versions.ts
echo
echo "== Mamba: selective scan and conv1d, Topiary vs transformers' slow path (bench/ssm-scan.ts)"
node --import tsx bench/ssm-scan.ts
echo
echo "== Pruning: Topiary vs a minimal PyTorch Wanda/SparseGPT on the same windows (bench/prune.ts)"
node --import tsx bench/prune.ts "$@"
