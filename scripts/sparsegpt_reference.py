#!/usr/bin/env python3
"""Generates test/fixtures/prune/sparsegpt-*: expected SparseGPT results from a minimal PyTorch port
of the reference `SparseGPT.fasterprune` (github.com/IST-DASLab/sparsegpt, sparsegpt.py), which
test/prune-sparsegpt.test.ts compares Topiary's implementation against.

The port keeps the reference's arithmetic (fp32, torch.linalg.cholesky → cholesky_inverse → upper
cholesky, block-joint unstructured mask, N:M groups chosen at their first column, rank-1 updates
inside a block, one matmul to the later columns) with one documented change: the reference
thresholds `tmp <= sort(tmp)[int(numel * sparsity)]`, which prunes one weight more than
int(numel * sparsity) per block; this port (like Topiary) prunes exactly int(numel * sparsity).

Problem: X (256 token rows × 64 features, correlated, feature 5 dead), W (32 × 64), seed 1234.
Files (little-endian float32, row-major): gram.bin = XᵀX (64×64, unscaled), weight.bin (32×64),
expected-<case>.bin (32×64); sparsegpt.json lists the cases with their options and loss.

Usage: python3 scripts/sparsegpt_reference.py [output dir, default test/fixtures/prune]
"""
import json
import os
import sys

import torch

ROWS, COLS, TOKENS, SEED = 32, 64, 256, 1234
DEAD_INPUT = 5


def fasterprune(W, H, sparsity, prunen=0, prunem=0, blocksize=128, percdamp=0.01):
    """The reference algorithm on W (rows × columns, fp32) with H = 2/n XᵀX. Returns (W, loss)."""
    W = W.clone().float()
    H = H.clone()
    rows, columns = W.shape
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0

    Losses = torch.zeros(rows)
    damp = percdamp * torch.mean(torch.diag(H))
    diag = torch.arange(columns)
    H[diag, diag] += damp
    H = torch.linalg.cholesky(H)
    H = torch.cholesky_inverse(H)
    H = torch.linalg.cholesky(H, upper=True)
    Hinv = H

    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        count = i2 - i1

        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Losses1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]

        if prunen == 0:
            tmp = W1 ** 2 / (torch.diag(Hinv1).reshape((1, -1))) ** 2
            # Reference: thresh = sort(tmp.flatten())[int(numel * sparsity)]; mask1 = tmp <= thresh.
            # Exactly int(numel * sparsity) lowest instead (stable sort: ties to the lower flat index).
            order = torch.sort(tmp.flatten(), stable=True)[1]
            mask1 = torch.zeros(tmp.numel(), dtype=torch.bool)
            mask1[order[: int(tmp.numel() * sparsity)]] = True
            mask1 = mask1.reshape(tmp.shape)
        else:
            mask1 = torch.zeros_like(W1) == 1

        for i in range(count):
            w = W1[:, i]
            d = Hinv1[i, i]

            if prunen != 0 and i % prunem == 0:
                tmp = W1[:, i:(i + prunem)] ** 2 / (torch.diag(Hinv1)[i:(i + prunem)].reshape((1, -1))) ** 2
                mask1.scatter_(1, i + torch.topk(tmp, prunen, dim=1, largest=False)[1], True)

            q = w.clone()
            q[mask1[:, i]] = 0

            Q1[:, i] = q
            Losses1[:, i] = (w - q) ** 2 / d ** 2

            err1 = (w - q) / d
            W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err1

        W[:, i1:i2] = Q1
        Losses += torch.sum(Losses1, 1) / 2

        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])

    return W, torch.sum(Losses).item()


def make_problem():
    generator = torch.Generator().manual_seed(SEED)
    # Correlated features: a random mixing of independent sources, plus per-feature scales.
    sources = torch.randn(TOKENS, COLS, generator=generator, dtype=torch.float64)
    mixing = torch.eye(COLS, dtype=torch.float64) + 0.3 * torch.randn(COLS, COLS, generator=generator, dtype=torch.float64)
    scales = torch.exp(torch.randn(COLS, generator=generator, dtype=torch.float64))
    x = ((sources @ mixing) * scales).float()
    x[:, DEAD_INPUT] = 0
    weight = torch.randn(ROWS, COLS, generator=generator).float()
    gram = (x.double().t() @ x.double()).float()
    return gram, weight


CASES = [
    {"name": "unstructured50-block16", "target": {"kind": "unstructured", "sparsity": 0.5}, "blocksize": 16},
    {"name": "unstructured30-block128", "target": {"kind": "unstructured", "sparsity": 0.3}, "blocksize": 128},
    {"name": "2of4-block16", "target": {"kind": "nm", "n": 2, "m": 4}, "blocksize": 16},
    {"name": "4of8-block128", "target": {"kind": "nm", "n": 4, "m": 8}, "blocksize": 128},
]


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "test", "fixtures", "prune")
    os.makedirs(out_dir, exist_ok=True)
    gram, weight = make_problem()
    gram.numpy().astype("<f4").tofile(os.path.join(out_dir, "sparsegpt-gram.bin"))
    weight.numpy().astype("<f4").tofile(os.path.join(out_dir, "sparsegpt-weight.bin"))
    # H as Topiary forms it: (2/n)·XᵀX computed in fp64 from the fp32 Gram, then rounded to fp32.
    hessian = (gram.double() * (2 / TOKENS)).float()
    manifest = {"rows": ROWS, "cols": COLS, "tokens": TOKENS, "seed": SEED, "deadInput": DEAD_INPUT, "cases": []}
    for case in CASES:
        target = case["target"]
        if target["kind"] == "unstructured":
            pruned, loss = fasterprune(weight, hessian, target["sparsity"], blocksize=case["blocksize"])
        else:
            pruned, loss = fasterprune(weight, hessian, 0, target["n"], target["m"], blocksize=case["blocksize"])
        file = f"sparsegpt-expected-{case['name']}.bin"
        pruned.numpy().astype("<f4").tofile(os.path.join(out_dir, file))
        manifest["cases"].append({**case, "file": file, "loss": loss})
    with open(os.path.join(out_dir, "sparsegpt.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
