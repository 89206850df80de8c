#!/usr/bin/env python3
"""Writes reference files the way scripts/dump_reference.py did before it streamed them: every
tensor held in one dict, serialized by safetensors.torch.save, its JSON header re-emitted with
sorted keys. tests/streamed_reference.rs checks that the streamed files are byte for byte these.

  whole_file_reference.py dump DUMP_REFERENCE_ARGS...   (the same arguments, the same model)
  whole_file_reference.py synthetic --whole FILE --streamed FILE
      12 prompts of random tensors of every kind the format has (TransformerLens ones too),
      written both ways; prompt 10 sorts before prompt 2 in the file.
"""
import json
import os
import struct
import sys

import safetensors.torch
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
import dump_reference  # noqa: E402


def whole_file(tensors, meta):
    tensors = {name: tensor.detach().cpu().contiguous().clone() for name, tensor in tensors.items()}
    blob = safetensors.torch.save(tensors, metadata=meta)
    size = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + size])
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + blob[8 + size:]


def dump(argv):
    args = dump_reference.parse_args(argv)
    forwards, shapes, meta = dump_reference.prepare(args)
    with open(args.output, "wb") as out:
        out.write(whole_file({name: forwards(name) for name in shapes}, meta))


def synthetic(whole_path, streamed_path):
    generator = torch.Generator().manual_seed(8)
    vocab, layers, width = 7, 2, 3
    token_lists = [[int(t) for t in torch.randint(0, vocab, (1 + i % 4,), generator=generator)] for i in range(12)]
    suffixes = ["tl_processed_logits", "tl_unprocessed_logits"]
    config = type("Config", (), {"vocab_size": vocab, "n_layer": layers, "n_embd": width})
    shapes = dump_reference.tensor_shapes(config, token_lists, suffixes)
    tensors = {}
    for name, (dtype, shape) in shapes.items():
        if dtype == torch.int64:
            tensors[name] = torch.tensor(token_lists[int(name.split(".")[1])], dtype=torch.int64)
        else:
            tensors[name] = torch.randn(shape, generator=generator) * 50
    meta = {"format": dump_reference.FORMAT, "prompts": json.dumps(["é😀"] * 12, ensure_ascii=False)}
    with open(whole_path, "wb") as out:
        out.write(whole_file(tensors, meta))
    header, order = dump_reference.plan_file(shapes, meta)
    with open(streamed_path, "wb") as out:
        dump_reference.write_tensors(out, header, order, shapes, tensors.__getitem__)


def main(argv):
    if argv[:1] == ["dump"]:
        dump(argv[1:])
    elif argv[:1] == ["synthetic"] and len(argv) == 5 and argv[1] == "--whole" and argv[3] == "--streamed":
        synthetic(argv[2], argv[4])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
