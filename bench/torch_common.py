"""Shared by the PyTorch cross-check scripts (scripts/reference_ppl.py, bench/torch_prefill.py):
loading a model the way transformers does, and describing the PyTorch build the numbers came from.

A model is either a Hugging Face folder (config.json + safetensors) or a .gguf file, which
transformers dequantizes to fp32 (loading a GGUF needs the `accelerate` package).
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def _pretrained_arguments(model_path: str) -> tuple[str, dict]:
    path = Path(model_path)
    if not path.exists():
        raise SystemExit(f"{model_path}: no such file or folder")
    if path.is_file():
        if path.suffix != ".gguf":
            raise SystemExit(f"{model_path}: expected a .gguf file or a Hugging Face model folder")
        return str(path.parent), {"gguf_file": path.name}
    return str(path), {}


def load_model(model_path: str) -> torch.nn.Module:
    """The model in fp32, in eval mode."""
    folder, extra = _pretrained_arguments(model_path)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **extra)
    model.eval()
    return model


def load_tokenizer(model_path: str):
    folder, extra = _pretrained_arguments(model_path)
    return AutoTokenizer.from_pretrained(folder, **extra)


def file_sha256(model_path: str) -> str | None:
    """sha256 of a single-file model (GGUF), so results name the exact weights; None for folders."""
    path = Path(model_path)
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def blas_backend() -> str:
    """The BLAS/LAPACK line of torch's build configuration, e.g. "BLAS_INFO=mkl, LAPACK_INFO=mkl"."""
    config = torch.__config__.show()
    found = {key: value for key, value in re.findall(r"(BLAS_INFO|LAPACK_INFO)=([^,\s]+)", config)}
    cpu = re.search(r"CPU capability usage: (\S+)", config)
    parts = [f"{key}={value}" for key, value in sorted(found.items())]
    if cpu:
        parts.append(f"CPU capability {cpu.group(1)}")
    mkl = re.search(r"Math Kernel Library Version (\S+)", config)
    if mkl:
        parts.append(f"MKL {mkl.group(1)}")
    return ", ".join(parts) if parts else "unknown"


def torch_description() -> dict:
    return {
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "blas": blas_backend(),
    }
