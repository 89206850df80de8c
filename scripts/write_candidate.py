#!/usr/bin/env python3
"""Write a gpt2-parity candidate file: another GPT-2 implementation's logits for a reference's prompts.

A port (candle, ggml, ONNX Runtime, JAX, your own C++ or CUDA) is checked by running it on the
token ids a reference file holds and saving what it returns in the same format; then

    gpt2-parity compare --model openai-community/gpt2 --reference ref.safetensors \\
        --candidate candidate.safetensors

reports candidate-vs-reference with the usual metrics, verdict and exit code (docs/candidates.md).

As a library (any callable that maps a list of token ids to logits [T, V]; numpy arrays, torch
tensors, or anything numpy.asarray accepts):

    from write_candidate import write_candidate
    write_candidate("ref.safetensors", "candidate.safetensors", my_port_forward,
                    producer={"my_port": "0.3.1"})

The callable may instead return a tuple (logits [T, V], resid [L+1, T, D]): resid[0] is the token
plus position embedding and resid[l] the output of block l-1, before ln_f. With it, the report
names the first block whose output diverges.

From the command line, naming the callable as module:function (the module is imported from the
current directory or PYTHONPATH):

    python scripts/write_candidate.py --reference ref.safetensors --output candidate.safetensors \\
        my_port:forward

Needs numpy and safetensors (both in scripts/requirements.txt). Exit status 2 with one line on
stderr when the reference cannot be read or the callable returns the wrong shape.
"""

import argparse
import importlib
import json
import os
import sys
import tempfile

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

FORMAT = "gpt2-parity-reference/1"


class CandidateError(Exception):
    """A problem with the reference or with what the callable returned, in one line."""


def write_candidate(reference, output, forward, producer=None, model="candidate", attn_implementation="unknown"):
    """Runs `forward` on every prompt of `reference` and writes its outputs to `output`.

    reference: path of a gpt2-parity-reference/1 file (its prompts, tokens, prepend_bos and
        weights digest are copied, so the candidate is checked on exactly the same inputs).
    forward: callable(list[int]) -> logits [T, V], or a tuple (logits, resid [L+1, T, D]).
    producer: dict of versions to record (your port's name and version, say).
    model: what the candidate's `model` metadata says produced it.
    The file is written whole or not at all.
    """
    with safe_open(reference, framework="np") as source:
        metadata = source.metadata() or {}
        if metadata.get("format") != FORMAT:
            raise CandidateError(f"{reference} is not a {FORMAT} file (format {metadata.get('format')!r})")
        prompts = json.loads(metadata["prompts"])
        tensors = {}
        for index in range(len(prompts)):
            tokens = source.get_tensor(f"prompt.{index}.tokens")
            vocab = source.get_slice(f"prompt.{index}.logits").get_shape()[1]
            logits, resid = _split(forward([int(token) for token in tokens]))
            tensors[f"prompt.{index}.tokens"] = tokens
            tensors[f"prompt.{index}.logits"] = _checked(logits, (len(tokens), vocab), f"prompt {index} logits", "[T, V]")
            if resid is not None:
                resid = np.asarray(_to_numpy(resid), dtype=np.float32)
                if resid.ndim != 3 or resid.shape[1] != len(tokens):
                    raise CandidateError(f"prompt {index} resid has shape {resid.shape}, expected [L+1, {len(tokens)}, D]")
                tensors[f"prompt.{index}.resid"] = np.ascontiguousarray(resid)
    candidate_metadata = {
        "format": FORMAT,
        "prompts": metadata["prompts"],
        "model": model,
        "weights": metadata["weights"],
        "prepend_bos": metadata["prepend_bos"],
        "dtype": "float32",
        "attn_implementation": attn_implementation,
        "producer": json.dumps({"python": sys.version.split()[0], "numpy": np.__version__, **(producer or {})}),
    }
    directory = os.path.dirname(os.path.abspath(output))
    handle, temporary = tempfile.mkstemp(prefix=".write-candidate-", dir=directory)
    os.close(handle)
    try:
        save_file(tensors, temporary, metadata=candidate_metadata)
        os.replace(temporary, output)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _split(returned):
    if isinstance(returned, tuple) and len(returned) == 2:
        return returned
    return returned, None


def _checked(values, shape, what, expected):
    values = np.asarray(_to_numpy(values), dtype=np.float32)
    if values.shape != shape:
        raise CandidateError(f"{what} have shape {values.shape}, expected {expected} = {list(shape)}")
    return np.ascontiguousarray(values)


def _to_numpy(values):
    # torch tensors (also on a GPU, or requiring grad) without importing torch here.
    if hasattr(values, "detach"):
        values = values.detach().cpu().float().numpy()
    return values


def _load_callable(spec):
    module_name, _, function_name = spec.partition(":")
    if not module_name or not function_name:
        raise CandidateError(f"{spec!r} is not module:function")
    sys.path.insert(0, os.getcwd())
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as error:
        raise CandidateError(f"cannot load {spec}: {error}") from error
    return function


def main(argv):
    parser = argparse.ArgumentParser(prog="write_candidate.py", description=__doc__.splitlines()[0])
    parser.add_argument("--reference", required=True, help="the gpt2-parity-reference/1 file whose prompts to run")
    parser.add_argument("--output", required=True, help="candidate file to write")
    parser.add_argument("--model", default="candidate", help="what produced the candidate (recorded as its model)")
    parser.add_argument("--producer", default="{}", help="JSON object of versions to record, e.g. '{\"my_port\": \"0.3\"}'")
    parser.add_argument("forward", help="module:function mapping a list of token ids to logits [T, V] (or logits, resid)")
    args = parser.parse_args(argv)
    try:
        write_candidate(args.reference, args.output, _load_callable(args.forward), json.loads(args.producer), args.model)
    except (CandidateError, OSError, KeyError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main(sys.argv[1:])
