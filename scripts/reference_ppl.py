#!/usr/bin/env python3
"""WikiText-2 test perplexity computed by Hugging Face transformers (fp32, CPU): the number
Topiary's own perplexity must reproduce for the same model, protocol and seqlen.

Protocol (docs/METHODS.md): the rows are the lines of wiki.test.raw, each keeping its "\\n", blank
lines (" \\n") as empty rows, joined with "\\n\\n"; tokenized once with the tokenizer's usual BOS
handling; cut into non-overlapping windows of seqlen tokens (tail dropped); PPL = exp(mean NLL of
every next-token prediction inside the windows used).

  python scripts/reference_ppl.py /root/.cache/topiary/SmolLM2-135M-Instruct.Q4_1.gguf --seqlen 2048 --max-windows 4

The model is a .gguf file (dequantized to fp32 by transformers; needs `accelerate`) or a Hugging
Face folder. Prints one JSON object on stdout; it also carries the token count of the whole text
and its first ids, to check tokenization parity separately from the model.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from torch_common import file_sha256, load_model, load_tokenizer, torch_description  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
FIRST_IDS_SHOWN = 20


def data_dir() -> Path:
    return Path(os.environ.get("TOPIARY_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))


def wikitext2_test_text(raw_file: Path) -> str:
    """The test split as the Hugging Face `wikitext-2-raw-v1` loader gives it, rows joined by "\\n\\n"."""
    lines = raw_file.read_text(encoding="utf-8").splitlines(keepends=True)
    rows = ["" if line == " \n" else line for line in lines]
    return "\n\n".join(rows)


def windows_nll(model: torch.nn.Module, ids: torch.Tensor, seqlen: int, window_count: int) -> tuple[float, int]:
    """Summed next-token NLL (in nats) over the first window_count windows, and the number of predictions."""
    nll_sum = 0.0
    predictions = 0
    with torch.inference_mode():
        for window in range(window_count):
            window_ids = ids[window * seqlen : (window + 1) * seqlen].unsqueeze(0)
            logits = model(input_ids=window_ids, attention_mask=torch.ones_like(window_ids)).logits[0]
            nll_sum += F.cross_entropy(logits[:-1].double(), window_ids[0, 1:], reduction="sum").item()
            predictions += seqlen - 1
            print(f"window {window + 1}/{window_count}: running ppl {math.exp(nll_sum / predictions):.4f}", file=sys.stderr)
    return nll_sum, predictions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help=".gguf file or Hugging Face model folder")
    parser.add_argument("--seqlen", type=int, default=2048)
    parser.add_argument("--max-windows", type=int, default=None, help="evaluate only the first K windows")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--text", type=Path, default=None, help="default: $TOPIARY_DATA_DIR/wikitext2/wiki.test.raw")
    parser.add_argument(
        "--tokens", type=Path, default=None,
        help="a JSON list of token ids to use instead of tokenizing the text (compares the model alone, on Topiary's tokens)",
    )
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    raw_file = args.text or data_dir() / "wikitext2" / "wiki.test.raw"
    if args.tokens is not None:
        ids = torch.tensor(json.loads(args.tokens.read_text()), dtype=torch.long)
    else:
        tokenizer = load_tokenizer(args.model)
        ids = torch.tensor(tokenizer(wikitext2_test_text(raw_file)).input_ids, dtype=torch.long)
    available = ids.numel() // args.seqlen
    window_count = available if args.max_windows is None else min(args.max_windows, available)
    if window_count == 0:
        raise SystemExit(f"{raw_file}: {ids.numel()} tokens, fewer than one window of {args.seqlen}")

    model = load_model(args.model)
    start = time.perf_counter()
    nll_sum, predictions = windows_nll(model, ids, args.seqlen, window_count)
    seconds = time.perf_counter() - start

    result = {
        "model": str(args.model),
        "model_sha256": file_sha256(args.model),
        "text": str(raw_file),
        "perplexity": math.exp(nll_sum / predictions),
        "nll_sum": nll_sum,
        "tokens": predictions,
        "windows": window_count,
        "windows_available": available,
        "seqlen": args.seqlen,
        "seconds": round(seconds, 2),
        "text_tokens": ids.numel(),
        "first_ids": ids[:FIRST_IDS_SHOWN].tolist(),
        **torch_description(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
