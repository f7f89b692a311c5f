"""Logits of a Hugging Face folder computed by transformers (fp32, CPU), for parity tests.

Usage: python3 scripts/hf_logits.py MODEL_DIR... TOKENS_JSON
TOKENS_JSON is a list of equal-length windows of token ids; prints, for each MODEL_DIR, a line
{"logits": [...]} (flat, windows x seqlen x vocab). Several folders share one start of Python and
torch, which costs seconds.
"""
import json
import sys

import torch
from transformers import AutoModelForCausalLM


def main() -> None:
    model_dirs, tokens = sys.argv[1:-1], json.loads(sys.argv[-1])
    for model_dir in model_dirs:
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
        model.eval()
        with torch.no_grad():
            logits = model(torch.tensor(tokens, dtype=torch.long)).logits
        print(json.dumps({"logits": logits.flatten().tolist()}))


if __name__ == "__main__":
    main()
