"""The floor for the bundled reference script (scripts/dump_reference.py): a bare `model(ids)`
loop over the same prompts in the same Python, transformers eager float32, nothing kept or
written. bench/scale.sh times the script against it.

  bare_forward.py MODEL_DIR PROMPTS.jsonl
"""

import json
import sys

import torch
import transformers


def main(model_dir, prompts_file):
    with open(prompts_file, encoding="utf-8") as handle:
        prompts = [json.loads(line) for line in handle if line.strip()]
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.GPT2LMHeadModel.from_pretrained(model_dir, attn_implementation="eager", dtype=torch.float32).eval()
    with torch.no_grad():
        for prompt in prompts:
            model(torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]]))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
