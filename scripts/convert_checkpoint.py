#!/usr/bin/env python3
"""Converts a pytorch_model.bin (a pickle) into safetensors, for gpt2-parity.

gpt2-parity never unpickles in Rust: a pickle can run arbitrary code. This script loads it with
torch.load(weights_only=True), which refuses anything but tensors and plain containers, and
writes every tensor as stored (dtype, names) into OUTPUT. A tensor that shares its storage
with another (GPT-2's lm_head.weight is its token embedding) is written once, under the
embedding's name. gpt2-parity runs it once per checkpoint and keeps the result in its cache.

Usage: convert_checkpoint.py INPUT OUTPUT
"""

import sys

import torch
from safetensors.torch import save_file


def tied_last(name):
    """Sort key: names of tied LM heads after everything else, so the embedding keeps its name."""
    return (name.split(".")[-2:] == ["lm_head", "weight"], name)


def main(source, output):
    try:
        state = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any load failure is one message
        sys.exit(f"{source} is not a loadable PyTorch checkpoint ({type(err).__name__}: {err}); re-download the model")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        sys.exit(f"{source} does not hold a plain state dict of tensors; re-save the model with save_pretrained")
    tensors, seen = {}, set()
    for name in sorted(state, key=tied_last):
        tensor = state[name]
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tuple(tensor.stride()))
        if key in seen:
            continue
        seen.add(key)
        tensors[name] = tensor.contiguous()
    save_file(tensors, output, metadata={"format": "pt"})


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[-1])
    main(sys.argv[1], sys.argv[2])
