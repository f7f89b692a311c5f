#!/usr/bin/env python3
"""Wanda and SparseGPT layer-wise pruning in plain PyTorch (CPU, fp32): the baseline bench/prune.ts
runs beside Topiary on the same model and the same calibration windows.

It follows the Wanda repository's lib/prune.py (`prune_wanda`, `prune_sparsegpt`) step for step:
catch the inputs of decoder layer 0 (and the keyword arguments the model passes it: rotary
`position_embeddings`, mask, position ids); then per decoder layer, forward hooks on every linear
layer accumulate Wanda's `scaler_row` or SparseGPT's H in one pass over the windows (one window at a
time, each linear layer its own statistics, as the reference does), every linear layer is pruned,
and the pruned layer is run again to give the next layer its inputs. The model list of the
reference is replaced by the generic decoder structure (`model.model.layers`, every nn.Linear inside
a layer), so any Llama-like model transformers loads works.

Masks are the references': Wanda keeps per output row (unstructured: the floor(p·d_in) lowest
|W|·sqrt(scaler_row) of each row; N:M: the N lowest of each group of M). SparseGPT is the reference
`fasterprune` as ported in scripts/sparsegpt_reference.py, which prunes exactly floor(p·numel) per
block like Topiary (the reference prunes one weight more per block; with 128-column blocks of a
576-row matrix that is 1 of 36 864, i.e. sparsity 50.003% instead of 50.000%).

  python bench/torch_prune.py MODEL WINDOWS.json --method wanda|sparsegpt (--sparsity P | --pattern N:M) --out DIR

MODEL is a Hugging Face folder or a .gguf file; WINDOWS.json is {"windows": [[token ids], ...]}.
Writes the pruned model to DIR (save_pretrained, safetensors, tokenizer files carried over) and
prints one JSON object on stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

import torch
from torch import nn

from torch_common import load_model, load_tokenizer, torch_description

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from sparsegpt_reference import fasterprune  # noqa: E402  (the shared port of the reference algorithm)

TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "tokenizer.bin"]


class WandaStats:
    """The reference WrappedGPT: scaler_row = running mean over windows of Σ_tokens x_j²."""

    def __init__(self, columns: int):
        self.scaler_row = torch.zeros(columns)
        self.nsamples = 0

    def add_batch(self, inp: torch.Tensor) -> None:
        batch = inp.shape[0] if inp.dim() == 3 else 1
        inp = inp.reshape(-1, inp.shape[-1]).t().float()
        self.scaler_row *= self.nsamples / (self.nsamples + batch)
        self.nsamples += batch
        self.scaler_row += torch.norm(inp, p=2, dim=1) ** 2 / self.nsamples


class HessianStats:
    """The reference SparseGPT.add_batch: H = running mean over windows of 2·XᵀX."""

    def __init__(self, columns: int):
        self.H = torch.zeros(columns, columns)
        self.nsamples = 0

    def add_batch(self, inp: torch.Tensor) -> None:
        batch = inp.shape[0] if inp.dim() == 3 else 1
        inp = inp.reshape(-1, inp.shape[-1]).t().float()
        self.H *= self.nsamples / (self.nsamples + batch)
        self.nsamples += batch
        inp = (2 / self.nsamples) ** 0.5 * inp
        self.H += inp.matmul(inp.t())


def prune_wanda_matrix(weight: torch.Tensor, stats: WandaStats, sparsity: float, prune_n: int, prune_m: int) -> None:
    metric = torch.abs(weight) * torch.sqrt(stats.scaler_row.reshape(1, -1))
    mask = torch.zeros_like(metric, dtype=torch.bool)
    if prune_n != 0:
        for column in range(0, metric.shape[1], prune_m):
            group = metric[:, column:column + prune_m]
            mask.scatter_(1, column + torch.topk(group, prune_n, dim=1, largest=False)[1], True)
    else:
        order = torch.sort(metric, dim=-1, stable=True)[1]
        mask.scatter_(1, order[:, : int(metric.shape[1] * sparsity)], True)
    weight[mask] = 0


def prune_sparsegpt_matrix(weight: torch.Tensor, stats: HessianStats, sparsity: float, prune_n: int, prune_m: int) -> None:
    pruned, _loss = fasterprune(weight, stats.H, sparsity, prune_n, prune_m, blocksize=128, percdamp=0.01)
    weight.copy_(pruned)


METHODS = {"wanda": (WandaStats, prune_wanda_matrix), "sparsegpt": (HessianStats, prune_sparsegpt_matrix)}


class _Caught(Exception):
    pass


def layer0_inputs(model: nn.Module, windows: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """The hidden states entering decoder layer 0 for every window, and the keyword arguments the
    model passes its layers (rotary position_embeddings, attention mask, position ids)."""
    layers = model.model.layers
    first = layers[0]
    inputs = torch.zeros(windows.shape[0], windows.shape[1], model.config.hidden_size)
    caught: dict = {}

    class Catcher(nn.Module):
        def forward(self, hidden_states, **kwargs):
            inputs[caught["index"]] = hidden_states[0]
            caught["kwargs"] = kwargs
            raise _Caught

    layers[0] = Catcher()
    try:
        for index in range(windows.shape[0]):
            caught["index"] = index
            try:
                model(windows[index:index + 1], use_cache=False)
            except _Caught:
                pass
    finally:
        layers[0] = first
    return inputs, caught["kwargs"]


def run_layer(layer: nn.Module, inputs: torch.Tensor, outputs: torch.Tensor, kwargs: dict) -> None:
    for index in range(inputs.shape[0]):
        result = layer(inputs[index:index + 1], **kwargs)
        outputs[index] = (result[0] if isinstance(result, tuple) else result)[0]


@torch.no_grad()
def prune_layerwise(model: nn.Module, windows: torch.Tensor, method: str, sparsity: float, prune_n: int, prune_m: int) -> list[float]:
    """Prunes every linear layer of every decoder layer in place; returns the seconds per layer."""
    make_stats, prune_matrix = METHODS[method]
    inputs, kwargs = layer0_inputs(model, windows)
    outputs = torch.zeros_like(inputs)
    layer_seconds = []
    for layer in model.model.layers:
        started = time.perf_counter()
        linears = {name: module for name, module in layer.named_modules() if isinstance(module, nn.Linear)}
        stats = {name: make_stats(module.weight.shape[1]) for name, module in linears.items()}
        hooks = [
            module.register_forward_hook(lambda _module, args, _output, name=name: stats[name].add_batch(args[0].data))
            for name, module in linears.items()
        ]
        run_layer(layer, inputs, outputs, kwargs)
        for hook in hooks:
            hook.remove()
        for name, module in linears.items():
            prune_matrix(module.weight.data, stats[name], sparsity, prune_n, prune_m)
        run_layer(layer, inputs, outputs, kwargs)
        inputs, outputs = outputs, inputs
        layer_seconds.append(time.perf_counter() - started)
    return layer_seconds


def measured_sparsity(model: nn.Module) -> float:
    zeros = total = 0
    for layer in model.model.layers:
        for module in layer.modules():
            if isinstance(module, nn.Linear):
                zeros += int((module.weight == 0).sum())
                total += module.weight.numel()
    return zeros / total


def save_with_tokenizer(model: nn.Module, model_path: str, out: str) -> None:
    model.save_pretrained(out)
    source = Path(model_path)
    if source.is_dir():
        for name in TOKENIZER_FILES:
            if (source / name).exists():
                shutil.copyfile(source / name, Path(out) / name)
    else:
        load_tokenizer(model_path).save_pretrained(out)


def parse_pattern(pattern: str) -> tuple[int, int]:
    n, _, m = pattern.partition(":")
    if not (n.isdigit() and m.isdigit()) or not 0 < int(n) < int(m):
        raise SystemExit(f"--pattern must look like N:M with 0 < N < M, got {pattern!r}")
    return int(n), int(m)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help=".gguf file or Hugging Face model folder")
    parser.add_argument("windows", help='JSON file {"windows": [[token ids], ...]}')
    parser.add_argument("--method", choices=sorted(METHODS), required=True)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--sparsity", type=float)
    target.add_argument("--pattern", help="N:M, e.g. 2:4")
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    prune_n, prune_m = parse_pattern(args.pattern) if args.pattern else (0, 0)
    sparsity = args.sparsity if args.sparsity is not None else prune_n / prune_m
    if not 0 <= sparsity < 1:
        raise SystemExit(f"--sparsity must be in [0, 1), got {sparsity}")

    started = time.perf_counter()
    with open(args.windows) as file:
        windows = torch.tensor(json.load(file)["windows"], dtype=torch.long)
    model = load_model(args.model)
    model.config.use_cache = False
    loaded = time.perf_counter()
    layer_seconds = prune_layerwise(model, windows, args.method, sparsity, prune_n, prune_m)
    pruned = time.perf_counter()
    save_with_tokenizer(model, args.model, args.out)
    finished = time.perf_counter()

    result = {
        "method": args.method,
        "target": args.pattern or f"{sparsity * 100:.1f}% unstructured",
        "sparsity": measured_sparsity(model),
        "windows": list(windows.shape),
        "seconds": finished - started,
        "load_seconds": loaded - started,
        "prune_seconds": pruned - loaded,
        "save_seconds": finished - pruned,
        "layer_seconds": [round(s, 3) for s in layer_seconds],
        # ru_maxrss is in KiB on Linux.
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "out": os.path.abspath(args.out),
        "attention": model.config._attn_implementation,
        **torch_description(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
