"""Logits of a Hugging Face folder computed by transformers (fp32, CPU), for parity tests.

Usage: python3 scripts/hf_logits.py MODEL_DIR... TOKENS_JSON
       python3 scripts/hf_logits.py - < JOBS_JSON
TOKENS_JSON is a list of equal-length windows of token ids; prints, for each MODEL_DIR, a line
{"logits": [...]} (flat, windows x seqlen x vocab). With "-", stdin lists [{"dir", "windows"}]:
each folder on its own windows. Several folders share one start of Python and torch, which costs
seconds.
"""
import json
import sys

import torch
from transformers import AutoModelForCausalLM


def main() -> None:
    if sys.argv[1:] == ["-"]:
        jobs = [(job["dir"], job["windows"]) for job in json.load(sys.stdin)]
    else:
        jobs = [(model_dir, json.loads(sys.argv[-1])) for model_dir in sys.argv[1:-1]]
    for model_dir, tokens in jobs:
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
        model.eval()
        with torch.no_grad():
            logits = model(torch.tensor(tokens, dtype=torch.long)).logits
        print(json.dumps({"logits": logits.flatten().tolist()}))


if __name__ == "__main__":
    main()
