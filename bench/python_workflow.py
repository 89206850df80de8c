"""The workflow a user writes by hand today, for bench/run.sh to time beside gpt2-parity.

Loads a GPT-2 directory with Hugging Face transformers (eager, float32), runs one prompt, and,
when transformer_lens is importable, also loads it unprocessed and processed through
TransformerLens and compares the logits as a notebook would.
"""

import sys

import torch
import transformers


def main(model_dir, prompt):
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.GPT2LMHeadModel.from_pretrained(model_dir, attn_implementation="eager", dtype=torch.float32).eval()
    ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        logits = model(ids).logits[0]
    print(f"hf: mean {logits.mean():.4f} std {logits.std():.4f}")
    try:
        from transformer_lens.model_bridge import TransformerBridge
    except ImportError:
        print("transformer_lens not importable: HF part only")
        return
    for no_processing in (True, False):
        bridge = TransformerBridge.boot_transformers(model_dir, hf_model=model, tokenizer=tokenizer)
        bridge.enable_compatibility_mode(no_processing=no_processing)
        with torch.no_grad():
            tl_logits = bridge(ids)[0]
        diff = (tl_logits - logits).abs().max().item()
        print(f"tl no_processing={no_processing}: max |diff| {diff:.3e}, allclose {torch.allclose(tl_logits, logits)}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
