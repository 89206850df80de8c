#!/usr/bin/env python3
"""A stand-in for someone's GPT-2 port, for the candidate tests: numpy_gpt2.py's float64 forward
of a model directory, run through scripts/write_candidate.py as a port author would.

Usage: numpy_port.py --model DIR --reference REF --output CANDIDATE [--fault-block K] [--no-resid]

--fault-block K plants a bug in block K: its MLP output bias is off by a ramp of +-0.05 over the
model width (mean-free, so no LayerNorm removes it). Its output and everything after it diverge.
"""

import argparse
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(HERE, "..", "..", "scripts")]

import numpy_gpt2  # noqa: E402
from write_candidate import write_candidate  # noqa: E402


def main(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--reference", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--fault-block", type=int)
    parser.add_argument("--no-resid", action="store_true")
    args = parser.parse_args(argv)
    with open(os.path.join(args.model, "config.json"), encoding="utf-8") as handle:
        config = json.load(handle)
    weights = numpy_gpt2.load_weights(args.model, config)
    if args.fault_block is not None:
        bias = f"h.{args.fault_block}.mlp.c_proj.bias"
        weights[bias] = weights[bias] + np.linspace(-0.05, 0.05, config["n_embd"])

    def forward(token_ids):
        logits, resid = numpy_gpt2.forward(weights, config, np.asarray(token_ids, dtype=np.int64))
        return logits if args.no_resid else (logits, resid)

    write_candidate(args.reference, args.output, forward, producer={"port": "tests/support/numpy_port.py"}, model="numpy port")


if __name__ == "__main__":
    main(sys.argv[1:])
