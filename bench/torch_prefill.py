#!/usr/bin/env python3
"""Prefill throughput of a model in fp32 PyTorch on the CPU: the baseline Topiary's own forward
pass is compared with. One window of seqlen tokens (deterministic random ids) through the full
model, logits included; one warm-up run, then the median of the timed runs.

  python bench/torch_prefill.py /root/.cache/topiary/SmolLM2-135M-Instruct.Q4_1.gguf --seqlen 2048

The model is a .gguf file (dequantized to fp32 by transformers; needs `accelerate`) or a Hugging
Face folder. Prints one JSON object on stdout. The BLAS environment (OPENBLAS_* and friends) is left
exactly as the caller set it.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from torch_common import file_sha256, load_model, torch_description

IDS_SEED = 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help=".gguf file or Hugging Face model folder")
    parser.add_argument("--seqlen", type=int, default=2048)
    parser.add_argument("--runs", type=int, default=3, help="timed runs after one warm-up (median reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    model = load_model(args.model)
    generator = torch.Generator().manual_seed(IDS_SEED)
    ids = torch.randint(0, model.config.vocab_size, (1, args.seqlen), generator=generator)
    mask = torch.ones_like(ids)

    seconds = []
    with torch.inference_mode():
        for run in range(1 + args.runs):
            start = time.perf_counter()
            model(input_ids=ids, attention_mask=mask)
            if run > 0:
                seconds.append(time.perf_counter() - start)

    median = statistics.median(seconds)
    result = {
        "model": str(args.model),
        "model_sha256": file_sha256(args.model),
        "parameters": sum(p.numel() for p in model.parameters()),
        "seqlen": args.seqlen,
        "tokens_per_second": round(args.seqlen / median, 1),
        "median_seconds": round(median, 3),
        "run_seconds": [round(s, 3) for s in seconds],
        "attention": model.config._attn_implementation,
        # Other processes share the cores: read the number beside the load it ran under.
        "load_average_1min": round(os.getloadavg()[0], 2),
        **torch_description(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
