#!/usr/bin/env python3
"""Independent GPT-2 ports for the rounding-envelope tests: a numpy one and a plain torch one,
each in float32 or float64, each able to carry one of the ways GPT-2 ports commonly go wrong.
They share no code with gpt2-parity's forward or with transformers: written from the GPT-2
definition, so a verdict on them is a verdict on the tool, not on our forward with a flag.

Usage: gpt2_ports.py --model DIR --reference REF --output CANDIDATE
                     [--backend numpy|torch] [--dtype float32|float64]
                     [--deviation NAME [--block N]] [--no-resid]

Deviations (in every block unless --block N names one):
  exact_gelu, ln_eps_1e-12, ln_eps_1e-6, no_ln_f, attn_scale_d_model, no_attn_scale, no_mask,
  no_qkv_bias, no_attn_out_bias, no_mlp_in_bias, no_mlp_out_bias, half_softmax, half_layer_norm,
  positions_plus_1, positions_minus_1, bos_prepended, unembed_reshaped,
  untied_unembedding (an lm_head of its own, at Hugging Face's initial values: normal, std 0.02)
"""

import argparse
import json
import math
import os
import sys

import numpy as np
import safetensors.numpy

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, "..", "..", "scripts")]

from write_candidate import write_candidate  # noqa: E402

END_OF_TEXT = 50256
DEVIATIONS = {
    "exact_gelu", "ln_eps_1e-12", "ln_eps_1e-6", "no_ln_f", "attn_scale_d_model", "no_attn_scale", "no_mask",
    "no_qkv_bias", "no_attn_out_bias", "no_mlp_in_bias", "no_mlp_out_bias", "half_softmax", "half_layer_norm",
    "positions_plus_1", "positions_minus_1", "bos_prepended", "unembed_reshaped", "untied_unembedding",
}


def load(model_dir):
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as handle:
        config = json.load(handle)
    raw = safetensors.numpy.load_file(os.path.join(model_dir, "model.safetensors"))
    weights = {}
    for name, value in raw.items():
        short = name[len("transformer."):] if name.startswith("transformer.") else name
        if short.endswith(".attn.bias") or short.endswith(".attn.masked_bias") or short == "lm_head.weight":
            continue
        weights[short] = value
    return config, weights


class Ops:
    """The handful of array operations a GPT-2 forward needs, in numpy or in plain torch."""

    def __init__(self, backend, dtype):
        self.backend = backend
        if backend == "torch":
            import torch

            self.torch = torch
            self.dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
            self.half, self.single = torch.float16, torch.float32
        else:
            self.dtype = {"float32": np.float32, "float64": np.float64}[dtype]
            self.half, self.single = np.float16, np.float32

    def array(self, value):
        if self.backend == "torch":
            return self.torch.from_numpy(np.ascontiguousarray(value)).to(self.dtype)
        return np.asarray(value, dtype=self.dtype)

    def numpy(self, value):
        return value.double().numpy() if self.backend == "torch" else np.asarray(value, dtype=np.float64)

    def cast(self, value, dtype):
        return value.to(dtype) if self.backend == "torch" else value.astype(dtype)

    def clip_low(self, value, low):
        return value.clamp_min(low) if self.backend == "torch" else np.maximum(value, low)

    def tanh(self, value):
        return self.torch.tanh(value) if self.backend == "torch" else np.tanh(value)

    def erf(self, value):
        if self.backend == "torch":
            return self.torch.erf(value)
        from math import erf

        return np.vectorize(erf, otypes=[np.float64])(value.astype(np.float64)).astype(value.dtype)

    def exp(self, value):
        return self.torch.exp(value) if self.backend == "torch" else np.exp(value)

    def sqrt(self, value):
        return self.torch.sqrt(value) if self.backend == "torch" else np.sqrt(value)

    def transpose_heads(self, value):  # [T, H, Dh] <-> [H, T, Dh]
        return value.permute(1, 0, 2) if self.backend == "torch" else value.transpose(1, 0, 2)

    def transpose_last(self, value):
        return value.transpose(-1, -2) if self.backend == "torch" else np.swapaxes(value, -1, -2)

    def stack(self, values):
        return self.torch.stack(values) if self.backend == "torch" else np.stack(values)

    def mean(self, value):
        return value.mean(dim=-1, keepdim=True) if self.backend == "torch" else value.mean(axis=-1, keepdims=True)

    def max(self, value):
        return value.max(dim=-1, keepdim=True).values if self.backend == "torch" else value.max(axis=-1, keepdims=True)

    def sum(self, value):
        return value.sum(dim=-1, keepdim=True) if self.backend == "torch" else value.sum(axis=-1, keepdims=True)

    def future_mask(self, positions):
        mask = np.triu(np.ones((positions, positions), dtype=bool), k=1)
        return self.torch.from_numpy(mask) if self.backend == "torch" else mask

    def where(self, mask, low, value):
        if self.backend == "torch":
            return value.masked_fill(mask, low)
        return np.where(mask, low, value)


class Port:
    def __init__(self, config, weights, ops, deviation, block):
        self.config, self.ops, self.deviation, self.block = config, ops, deviation, block
        self.w = {name: ops.array(value) for name, value in weights.items()}
        self.eps = config.get("layer_norm_epsilon", 1e-5)

    def deviates(self, name, layer=None):
        if self.deviation != name:
            return False
        return self.block is None or layer == self.block

    def layer_norm(self, x, weight, bias, layer):
        eps = self.eps
        if self.deviates("ln_eps_1e-12", layer):
            eps = 1e-12
        if self.deviates("ln_eps_1e-6", layer):
            eps = 1e-6
        if self.deviates("half_layer_norm", layer):
            # Half-precision storage with float32 arithmetic inside, as mixed-precision kernels
            # do: inputs, parameters and the result rounded to float16.
            half = lambda v: self.ops.cast(self.ops.cast(v, self.ops.half), self.ops.single)
            out = self.normalize(half(x), half(weight), half(bias), eps)
            return self.ops.cast(half(out), x.dtype)
        return self.normalize(x, weight, bias, eps)

    def normalize(self, x, weight, bias, eps):
        mean = self.ops.mean(x)
        centered = x - mean
        var = self.ops.mean(centered * centered)
        return centered / self.ops.sqrt(var + eps) * weight + bias

    def linear(self, x, weight, bias, which, layer):
        out = x @ self.w[weight]
        return out if self.deviates(f"no_{which}_bias", layer) else out + self.w[bias]

    def attention(self, x, layer):
        t, d = x.shape
        n_head = self.config["n_head"]
        dh = d // n_head
        p = f"h.{layer}."
        qkv = self.linear(x, p + "attn.c_attn.weight", p + "attn.c_attn.bias", "qkv", layer)
        q, k, v = (self.ops.transpose_heads(qkv[:, i * d:(i + 1) * d].reshape(t, n_head, dh)) for i in range(3))
        scores = q @ self.ops.transpose_last(k)
        if self.deviates("attn_scale_d_model", layer):
            scores = scores / math.sqrt(d)
        elif not self.deviates("no_attn_scale", layer):
            scores = scores / math.sqrt(dh)
        if not self.deviates("no_mask", layer):
            scores = self.ops.where(self.ops.future_mask(t), -1e30, scores)
        half = self.deviates("half_softmax", layer)
        if half:
            # Scores and probabilities in float16, the exponentials summed in float32.
            scores = self.ops.cast(self.ops.cast(self.ops.clip_low(scores, -65504.0), self.ops.half), self.ops.single)
        scores = scores - self.ops.max(scores)
        pattern = self.ops.exp(scores)
        pattern = pattern / self.ops.sum(pattern)
        if half:
            pattern = self.ops.cast(self.ops.cast(pattern, self.ops.half), v.dtype)
        z = self.ops.transpose_heads(pattern @ v).reshape(t, d)
        return self.linear(z, p + "attn.c_proj.weight", p + "attn.c_proj.bias", "attn_out", layer)

    def gelu(self, u, layer):
        if self.deviates("exact_gelu", layer):
            return 0.5 * u * (1.0 + self.ops.erf(u / math.sqrt(2.0)))
        return 0.5 * u * (1.0 + self.ops.tanh(math.sqrt(2.0 / math.pi) * (u + 0.044715 * u * u * u)))

    def forward(self, token_ids):
        tokens = list(token_ids)
        prepended = self.deviation == "bos_prepended"
        if prepended:
            tokens = [END_OF_TEXT] + tokens
        t = len(tokens)
        offset = 1 if self.deviation == "positions_plus_1" else -1 if self.deviation == "positions_minus_1" else 0
        positions = [(i + offset) % self.config["n_positions"] for i in range(t)]
        x = self.w["wte.weight"][tokens] + self.w["wpe.weight"][positions]
        resid = [x]
        for layer in range(self.config["n_layer"]):
            p = f"h.{layer}."
            x = x + self.attention(self.layer_norm(x, self.w[p + "ln_1.weight"], self.w[p + "ln_1.bias"], layer), layer)
            m = self.layer_norm(x, self.w[p + "ln_2.weight"], self.w[p + "ln_2.bias"], layer)
            h = self.gelu(self.linear(m, p + "mlp.c_fc.weight", p + "mlp.c_fc.bias", "mlp_in", layer), layer)
            x = x + self.linear(h, p + "mlp.c_proj.weight", p + "mlp.c_proj.bias", "mlp_out", layer)
            resid.append(x)
        if self.deviation == "no_ln_f":
            final = x
        else:
            final = self.layer_norm(x, self.w["ln_f.weight"], self.w["ln_f.bias"], None)
        wte = self.w["wte.weight"]
        if self.deviation == "unembed_reshaped":
            unembedding = wte.reshape(wte.shape[1], wte.shape[0])
        elif self.deviation == "untied_unembedding":
            initial = np.random.default_rng(0).normal(0.0, 0.02, size=(wte.shape[1], wte.shape[0]))
            unembedding = self.ops.array(initial)
        else:
            unembedding = self.ops.transpose_last(wte)
        logits = self.ops.numpy(final @ unembedding)
        resid = self.ops.numpy(self.ops.stack(resid))
        if prepended:
            return logits[1:], resid[:, 1:]
        return logits, resid


def main(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--reference", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--backend", choices=["numpy", "torch"], default="numpy")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--deviation", choices=sorted(DEVIATIONS))
    parser.add_argument("--block", type=int)
    parser.add_argument("--no-resid", action="store_true")
    args = parser.parse_args(argv)
    config, weights = load(args.model)
    port = Port(config, weights, Ops(args.backend, args.dtype), args.deviation, args.block)

    def forward(token_ids):
        logits, resid = port.forward(token_ids)
        return logits if args.no_resid else (logits, resid)

    name = f"{args.backend} {args.dtype} port" + (f" with {args.deviation}" if args.deviation else "")
    write_candidate(args.reference, args.output, forward, producer={"port": "tests/support/gpt2_ports.py"}, model=name)


if __name__ == "__main__":
    main(sys.argv[1:])
