#!/usr/bin/env python3
"""Rewrites a model directory's model.safetensors in another checkpoint layout, for the tests
of gpt2-parity's loading (tests/checkpoint_layouts.rs).

Usage: relayout.py SOURCE_DIR OUT_DIR LAYOUT

LAYOUT is one of:
  sharded   model-0000N-of-00003.safetensors and model.safetensors.index.json (weight_map),
            as save_pretrained writes a checkpoint over its shard size
  float16   one model.safetensors with every tensor in float16
  finetune  transformer.-prefixed names plus an lm_head.weight, as a GPT2LMHeadModel fine-tune
  pickle    only pytorch_model.bin (torch.save of the state dict, lm_head.weight tied to the
            embedding's storage, as GPT2LMHeadModel.state_dict() gives it); needs torch
config.json and tokenizer.json are copied unchanged.
"""

import json
import os
import shutil
import sys

import numpy as np
import safetensors.numpy

WEIGHTS_FILE = "model.safetensors"


def prefixed(tensors):
    renamed = {("transformer." + name): value for name, value in tensors.items()}
    renamed["lm_head.weight"] = tensors["wte.weight"]
    return renamed


def main(source, out, layout):
    os.makedirs(out, exist_ok=True)
    for name in ("config.json", "tokenizer.json"):
        shutil.copyfile(os.path.join(source, name), os.path.join(out, name))
    tensors = safetensors.numpy.load_file(os.path.join(source, WEIGHTS_FILE))
    if layout == "sharded":
        names = sorted(tensors)
        count = 3
        weight_map = {}
        for index in range(count):
            shard = f"model-{index + 1:05d}-of-{count:05d}.safetensors"
            part = {name: tensors[name] for name in names[index::count]}
            safetensors.numpy.save_file(part, os.path.join(out, shard), metadata={"format": "pt"})
            weight_map.update({name: shard for name in part})
        total = sum(value.nbytes for value in tensors.values())
        with open(os.path.join(out, WEIGHTS_FILE + ".index.json"), "w", encoding="utf-8") as handle:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, handle, indent=2)
    elif layout == "float16":
        half = {name: value.astype(np.float16) for name, value in tensors.items()}
        safetensors.numpy.save_file(half, os.path.join(out, WEIGHTS_FILE), metadata={"format": "pt"})
    elif layout == "finetune":
        safetensors.numpy.save_file(prefixed(tensors), os.path.join(out, WEIGHTS_FILE), metadata={"format": "pt"})
    elif layout == "pickle":
        import torch

        state = {name: torch.from_numpy(value.copy()) for name, value in prefixed(tensors).items()}
        state["lm_head.weight"] = state["transformer.wte.weight"]
        torch.save(state, os.path.join(out, "pytorch_model.bin"))
    else:
        sys.exit(f"unknown layout {layout}")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: relayout.py SOURCE_DIR OUT_DIR LAYOUT")
    main(*sys.argv[1:])
