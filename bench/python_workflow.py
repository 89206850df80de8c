"""The workflow a user writes by hand today, for bench/run.sh and bench/scale.sh to time beside
gpt2-parity.

Loads a GPT-2 directory with Hugging Face transformers (eager, float32) and runs every prompt
(one on the command line, or a JSON Lines file of them with --prompts-file), keeping the logits
as a notebook would; then, when transformer_lens is importable, loads it unprocessed and
processed through TransformerLens, runs every prompt through each and compares the logits.
"""

import json
import sys

import torch
import transformers


def main(model_dir, prompts):
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.GPT2LMHeadModel.from_pretrained(model_dir, attn_implementation="eager", dtype=torch.float32).eval()
    ids = [torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]]) for prompt in prompts]
    with torch.no_grad():
        hf_logits = [model(prompt_ids).logits[0] for prompt_ids in ids]
    print(f"hf: {len(prompts)} prompts, first: mean {hf_logits[0].mean():.4f} std {hf_logits[0].std():.4f}")
    try:
        from transformer_lens.model_bridge import TransformerBridge
    except ImportError:
        print("transformer_lens not importable: HF part only")
        return
    for no_processing in (True, False):
        bridge = TransformerBridge.boot_transformers(model_dir, hf_model=model, tokenizer=tokenizer)
        bridge.enable_compatibility_mode(no_processing=no_processing)
        worst, close = 0.0, 0
        with torch.no_grad():
            for prompt_ids, logits in zip(ids, hf_logits):
                tl_logits = bridge(prompt_ids)[0]
                worst = max(worst, (tl_logits - logits).abs().max().item())
                close += torch.allclose(tl_logits, logits)
        print(f"tl no_processing={no_processing}: max |diff| {worst:.3e}, allclose on {close} of {len(prompts)} prompts")


def read_prompts(argv):
    if argv[0] == "--prompts-file":
        with open(argv[1], encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]
    return [argv[0]]


if __name__ == "__main__":
    main(sys.argv[1], read_prompts(sys.argv[2:]))
