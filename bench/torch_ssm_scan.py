#!/usr/bin/env python3
"""CPU seconds of transformers' slow-path Mamba sequence operations (the PyTorch reference
mamba_selective_scan and causal_conv1d_fn that MambaMixer falls back to without the CUDA kernels),
on random inputs of the shapes given, for bench/ssm-scan.ts. One thread; the median of `runs` calls
after a warm-up. Prints one JSON line.

Usage: python3 bench/torch_ssm_scan.py WINDOWS SEQ_LEN CHANNELS STATE_SIZE KERNEL RUNS
"""
import json
import statistics
import sys
import time

import torch
import transformers
from transformers.models.mamba.modeling_mamba import causal_conv1d_fn, mamba_selective_scan
from transformers.utils import logging as transformers_logging


def cpu_seconds(call, runs: int) -> float:
    call()
    times = []
    for _ in range(runs):
        started = time.process_time()
        call()
        times.append(time.process_time() - started)
    return statistics.median_high(times)


def main() -> None:
    windows, seq_len, channels, state_size, kernel, runs = map(int, sys.argv[1:7])
    torch.set_num_threads(1)
    transformers_logging.set_verbosity_error()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(windows, channels, seq_len, generator=generator)
    delta = torch.randn(windows, channels, seq_len, generator=generator) - 3
    a = -torch.exp(torch.randn(channels, state_size, generator=generator))
    b = torch.randn(windows, state_size, seq_len, generator=generator)
    c = torch.randn(windows, state_size, seq_len, generator=generator)
    d = torch.randn(channels, generator=generator)
    weight = torch.randn(channels, kernel, generator=generator)
    bias = torch.randn(channels, generator=generator)
    with torch.no_grad():
        scan = cpu_seconds(lambda: mamba_selective_scan(x, delta, a, b, c, D=d, delta_softplus=True), runs)
        conv = cpu_seconds(lambda: causal_conv1d_fn(x, weight, bias), runs)
    print(json.dumps({"scanSeconds": scan, "convSeconds": conv, "torch": torch.__version__, "transformers": transformers.__version__}))


if __name__ == "__main__":
    main()
